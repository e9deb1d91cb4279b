"""Scoring saved completions without training: what ``frugalrl rewards`` runs.

Input rows carry ``group`` (which prompt the completion answers), ``completion``, ``answer``
and optionally ``finished`` (bool, default True) and ``tokens`` (int). Without ``tokens`` the
length is counted with the recipe model's tokenizer: lengths are policy tokens, never characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from frugalrl.errors import UserError
from frugalrl.rewards.compose import RewardSpec
from frugalrl.rewards.scoring import RewardScorer
from frugalrl.sample import Sample

REQUIRED = ("group", "completion", "answer")


def _check_row(row: dict[str, Any], where: str, tokenizer) -> None:
    for name in REQUIRED:
        if name not in row or row[name] is None:
            raise UserError(f"{where}: missing field '{name}' (fields: {', '.join(row)})")
    if not isinstance(row["completion"], str):
        raise UserError(f"{where}: 'completion' must be a string")
    if "tokens" in row and not (isinstance(row["tokens"], int) and row["tokens"] >= 0):
        raise UserError(f"{where}: 'tokens' must be a non-negative integer")
    if "finished" in row and not isinstance(row["finished"], bool):
        raise UserError(f"{where}: 'finished' must be true or false")
    if "tokens" not in row and tokenizer is None:
        raise UserError(f"{where}: no 'tokens' field and no tokenizer to count them")


def score_rows(
    rows: Sequence[dict[str, Any]],
    specs: Sequence[RewardSpec],
    tokenizer=None,
    workers: int = 0,
    timeout: float = 30.0,
    source: str = "input",
) -> list[dict[str, Any]]:
    """Each row plus one column per reward and ``reward`` (the weighted total), input order."""
    groups: dict[Any, list[int]] = {}
    samples: list[Sample] = []
    for i, row in enumerate(rows):
        _check_row(row, f"{source}: row {i + 1}", tokenizer)
        tokens = row.get("tokens")
        if tokens is None:
            tokens = len(tokenizer(row["completion"], add_special_tokens=False)["input_ids"])
        samples.append(Sample(row["completion"], tokens, row.get("finished", True), row))
        groups.setdefault(str(row["group"]), []).append(i)
    with RewardScorer(specs, workers=workers, timeout=timeout) as scorer:
        batch = scorer.score([[samples[i] for i in members] for members in groups.values()])
    out: list[dict[str, Any]] = [dict(r) for r in rows]
    for g, members in enumerate(groups.values()):
        for j, i in enumerate(members):
            for name, values in batch.per_reward.items():
                out[i][name] = values[g][j]
            out[i]["reward"] = batch.totals[g][j]
            out[i].setdefault("tokens", samples[i].num_tokens)
    return out
