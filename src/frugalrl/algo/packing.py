"""Packing without padding: several (prompt, completion) sequences in one row of the forward.

``pack_batch`` pads every row to the longest prompt plus the longest completion of its
micro-batch. ``pack_rows`` instead lays the sequences end to end: each row holds as many as fit
(first-fit decreasing), position ids restart at 0 with every sequence, and no attention mask is
passed. transformers then keeps attention within each sequence from the position ids alone:
with SDPA / eager / flex attention as a block-diagonal causal mask
(``masking_utils.find_packed_sequence_indices``), with flash attention as its variable-length
kernel (one row only, which ``one_row`` asks for). ``supports_packing`` checks a model does.

Row width: under a dense mask (SDPA, eager) every row costs (width)² in attention, so rows are
as wide as the micro-batch's longest sequence: packing then never computes more than padding
would (fewer rows of at most the padded width), and computes less whenever lengths differ.
Under flash attention, attention costs only within each sequence, so one row holds them all.

The log-probs are those of the padded layout up to float rounding (tests/test_packing.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def first_fit_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Indices of ``lengths`` in rows of at most ``width`` each, first-fit decreasing: longest
    first, each into the first row with room (a longer one gets a row of its own)."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, room in enumerate(free) if room >= lengths[i]), None)
        if row is None:
            rows.append([])
            free.append(width)
            row = len(rows) - 1
        rows[row].append(i)
        free[row] -= lengths[i]
    return rows


def packed_width(lengths: Sequence[int], one_row: bool) -> int:
    """The row width ``pack_rows`` uses for sequences of ``lengths``."""
    return sum(lengths) if one_row else max(lengths)


def packed_size(lengths: Sequence[int], one_row: bool) -> int:
    """Positions (rows × width) of the tensors ``pack_rows`` makes for ``lengths``."""
    width = packed_width(lengths, one_row)
    return width * len(first_fit_rows(lengths, width))


def pack_rows(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    pad_id: int,
    one_row: bool = False,
) -> dict[str, Tensor]:
    """Lay out (prompt, completion) pairs end to end in rows (see the module docstring).

    Returns ``input_ids`` and ``position_ids`` (rows, width); ``completion_mask`` (pairs,
    longest completion) as ``pack_batch`` makes it, so log-probs come back in the same
    (pairs, completion) shape; and ``predict_index``: for each completion token, in the
    mask's row-major order, the flat position (row × width + column) whose output predicts it.
    Each row's unused tail is padding whose positions continue its last sequence: causal
    attention keeps it out of every real token's attention, and its outputs are never read.
    """
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions, strict=True)]
    width = packed_width(lengths, one_row)
    layout = first_fit_rows(lengths, width)
    ids = torch.full((len(layout), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(layout), width), dtype=torch.long)
    longest = max(len(c) for c in completions)
    predict = torch.zeros((len(prompts), longest), dtype=torch.long)
    completion_mask = torch.zeros((len(prompts), longest), dtype=torch.bool)
    for r, members in enumerate(layout):
        column = 0
        for i in members:
            n, p, c = lengths[i], len(prompts[i]), len(completions[i])
            ids[r, column : column + n] = torch.tensor([*prompts[i], *completions[i]])
            positions[r, column : column + n] = torch.arange(n)
            # the output at prompt position p - 1 predicts completion token 0
            predict[i, :c] = r * width + column + p - 1 + torch.arange(c)
            completion_mask[i, :c] = True
            column += n
        positions[r, column:] = positions[r, column - 1] + 1 + torch.arange(width - column)
    return {
        "input_ids": ids,
        "position_ids": positions,
        "completion_mask": completion_mask,
        "predict_index": predict[completion_mask],
    }


def attends_per_sequence(model) -> bool:
    """Whether ``model`` (or the module a DDP / DeepSpeed wrapper holds) uses a flash-attention
    kernel, whose packed (variable-length) form works on one row only."""
    config = getattr(model, "config", None) or getattr(
        getattr(model, "module", None), "config", None
    )
    return "flash" in str(getattr(config, "_attn_implementation", "") or "")


@torch.no_grad()
def supports_packing(model) -> bool:
    """Whether ``model`` keeps packed sequences apart: two sequences in one row give the same
    logits as each alone (a model whose masks ignore position ids would let the second
    attend to the first, and packing would be wrong)."""
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    first, second = [1, 2, 3, 4, 5], [6, 7, 8]
    ids = torch.tensor([first + second], device=device) % vocab
    positions = torch.tensor([list(range(5)) + list(range(3))], device=device)
    was_training = model.training
    model.eval()
    try:
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0, 5:]
        alone = model(input_ids=ids[:, 5:], use_cache=False).logits[0]
    finally:
        model.train(was_training)
    return bool(torch.allclose(packed.float(), alone.float(), atol=1e-4, rtol=1e-3))
