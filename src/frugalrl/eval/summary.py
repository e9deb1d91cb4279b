"""Summarize graded generation rows (``generations.jsonl``) per benchmark and overall.

One row per sample: ``benchmark``, ``id``, ``sample``, ``correct``, and optionally
``ungraded``, ``answer_group``, ``tokens``, ``finished``. Per benchmark:

- accuracy is avg@k: the mean over problems of the fraction of correct samples. Its 95% CI
  is a percentile bootstrap over problems (2000 resamples, seed 0): problems, not samples,
  are the unit, as they dominate the variance.
- pass@k is Chen et al.'s unbiased estimator, averaged over problems, for k = 1, 2, 4, ...
  up to n and n itself. maj@k is a majority vote over all of a problem's samples (see
  ``majority_correct``); it is null when no row carries an ``answer_group`` key (rows
  re-graded without answer groups), since scoring it 0 would read as a real result.
- Problems may have different sample counts n. Each problem's accuracy and maj@k use all
  of its samples; ``samples_per_problem`` reports the smallest n, which is also the largest
  k of pass@k (the k every problem can be scored at).
- Token statistics are over samples: mean and median tokens, tokens_per_correct = total
  tokens of all samples / number of correct samples (what one right answer costs; null if
  none is right), truncated_fraction = share of unfinished samples. They are null unless
  every sample of the benchmark has ``tokens`` (``finished`` for truncation): a statistic
  over the samples that happen to have them could be quietly biased.
- Ungradeable samples count as wrong and are counted in ``ungraded``.

``overall`` is the macro average over benchmarks (the papers' "Avg." column): every rate
and token statistic is the unweighted mean of the benchmarks' values (pass@k over the k
that every benchmark has), and its CI is the stratified bootstrap, resampling problems
within each benchmark. Two exceptions: tokens_per_correct is overall mean_tokens / overall
accuracy (the cost of a right answer on the equally weighted mix; a benchmark where
nothing is right does not make it undefined), and the counts are summed
(samples_per_problem is the smallest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from frugalrl.errors import UserError
from frugalrl.eval.stats import (
    bootstrap_ci,
    majority_correct,
    pass_at_k,
    short_m_at_k,
    stratified_bootstrap_ci,
)

CI_LEVEL = 0.95
CI_RESAMPLES = 2000
CI_SEED = 0

Row = Mapping[str, Any]


def parse_vote(spec: str) -> tuple[int, int | None]:
    """ "short-3@8" -> (3, 8); "short-1@k" -> (1, None): k = every sample of the problem."""
    head, sep, k = spec.partition("@")
    m = head.removeprefix("short-")
    if not (sep and head.startswith("short-") and m.isdigit() and (k == "k" or k.isdigit())):
        raise UserError(f"vote {spec!r}: expected short-M@K, e.g. short-3@8 or short-1@k")
    m_, k_ = int(m), None if k == "k" else int(k)
    if m_ < 1 or (k_ is not None and k_ < m_):
        raise UserError(f"vote {spec!r}: need 1 <= M <= K")
    return m_, k_


def summarize(rows: Sequence[Row], votes: Sequence[str] = ()) -> dict[str, Any]:
    """{"benchmarks": {name: stats}, "overall": stats}, benchmarks in order of appearance;
    ``votes`` (e.g. "short-3@8") add ``stats["votes"][vote]`` (:func:`_vote_stats`)."""
    if not rows:
        raise ValueError("no generation rows to summarize")
    by_benchmark: dict[str, dict[Any, list[Row]]] = {}
    for row in rows:
        by_benchmark.setdefault(row["benchmark"], {}).setdefault(row["id"], []).append(row)
    benchmarks, per_problem = {}, {}
    for name, problems in by_benchmark.items():
        benchmarks[name], per_problem[name] = _benchmark_stats(list(problems.values()))
        if votes:
            ordered = [sorted(p, key=lambda r: r.get("sample", 0)) for p in problems.values()]
            benchmarks[name]["votes"] = {v: _vote_stats(ordered, v) for v in votes}
    overall = _overall_stats(benchmarks, per_problem)
    if votes:
        overall["votes"] = {
            v: {
                key: _mean_or_none([b["votes"][v][key] for b in benchmarks.values()])
                for key in ("accuracy", "tokens_spent", "tokens_all_k")
            }
            for v in votes
        }
    return {"benchmarks": benchmarks, "overall": overall}


def _vote_stats(problems: list[list[Row]], vote: str) -> dict[str, Any]:
    """short-m@k over the first k samples of each problem: accuracy, mean tokens spent per
    problem, and what decoding all k to the end costs (their total tokens). Null when some
    sample lacks ``tokens`` or ``answer_group``, or a problem has fewer than k samples."""
    m, k = parse_vote(vote)
    k = k or min(len(p) for p in problems)
    usable = all(len(p) >= max(k, m) for p in problems) and all(
        r.get("tokens") is not None and "answer_group" in r for p in problems for r in p
    )
    if not usable:
        return {"m": m, "k": k, "accuracy": None, "tokens_spent": None, "tokens_all_k": None}
    results = [
        short_m_at_k(
            [r["tokens"] for r in p[:k]],
            [r["answer_group"] for r in p[:k]],
            [bool(r["correct"]) for r in p[:k]],
            m,
        )
        for p in problems
    ]
    return {
        "m": m,
        "k": k,
        "accuracy": float(np.mean([won for won, _ in results])),
        "tokens_spent": float(np.mean([spent for _, spent in results])),
        "tokens_all_k": float(np.mean([sum(r["tokens"] for r in p[:k]) for p in problems])),
    }


def _pass_ks(n: int) -> list[int]:
    """1, 2, 4, ... <= n, then n itself."""
    ks = [2**i for i in range(n.bit_length()) if 2**i <= n]
    return ks if ks[-1] == n else [*ks, n]


def _mean_or_none(values: Sequence[Any]) -> float | None:
    return None if any(v is None for v in values) else float(np.mean(values))


def _benchmark_stats(problems: list[list[Row]]) -> tuple[dict[str, Any], np.ndarray]:
    """Stats of one benchmark (see the module docstring) and its per-problem accuracy."""
    # Vote ties go to the earliest sample, so order each problem by sample index.
    problems = [sorted(p, key=lambda r: r.get("sample", 0)) for p in problems]
    samples = [r for p in problems for r in p]
    sizes = [len(p) for p in problems]
    n_correct = [sum(bool(r["correct"]) for r in p) for p in problems]
    accuracy = np.array([c / n for n, c in zip(sizes, n_correct, strict=True)])
    k_max = min(sizes)
    pass_k = {
        str(k): float(np.mean([pass_at_k(n, c, k) for n, c in zip(sizes, n_correct, strict=True)]))
        for k in _pass_ks(k_max)
    }
    maj = None
    if any("answer_group" in r for r in samples):
        maj = float(
            np.mean(
                [
                    majority_correct([r.get("answer_group") for r in p], [r["correct"] for r in p])
                    for p in problems
                ]
            )
        )
    tokens = [r.get("tokens") for r in samples]
    known_tokens = all(t is not None for t in tokens)
    finished = [r.get("finished") for r in samples]
    total_correct = sum(n_correct)
    lo, hi = bootstrap_ci(accuracy, CI_LEVEL, CI_RESAMPLES, CI_SEED)
    stats = {
        "num_problems": len(problems),
        "samples_per_problem": k_max,
        "num_samples": len(samples),
        "accuracy": float(accuracy.mean()),
        "accuracy_ci95": [lo, hi],
        "pass_at_k": pass_k,
        "maj_at_k": maj,
        "mean_tokens": float(np.mean(tokens)) if known_tokens else None,
        "median_tokens": float(np.median(tokens)) if known_tokens else None,
        "tokens_per_correct": (
            sum(tokens) / total_correct if known_tokens and total_correct else None
        ),
        "truncated_fraction": _mean_or_none([None if f is None else not f for f in finished]),
        "ungraded": sum(bool(r.get("ungraded")) for r in samples),
    }
    return stats, accuracy


def _overall_stats(
    benchmarks: Mapping[str, Mapping[str, Any]], per_problem: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """Macro average over benchmarks, with the stratified bootstrap CI."""
    stats = list(benchmarks.values())

    def macro(key: str) -> float | None:
        return _mean_or_none([s[key] for s in stats])

    common_ks = set.intersection(*(set(s["pass_at_k"]) for s in stats))
    lo, hi = stratified_bootstrap_ci(per_problem, CI_LEVEL, CI_RESAMPLES, CI_SEED)
    accuracy, mean_tokens = macro("accuracy"), macro("mean_tokens")
    return {
        "num_problems": sum(s["num_problems"] for s in stats),
        "samples_per_problem": min(s["samples_per_problem"] for s in stats),
        "num_samples": sum(s["num_samples"] for s in stats),
        "accuracy": accuracy,
        "accuracy_ci95": [lo, hi],
        "pass_at_k": {
            k: float(np.mean([s["pass_at_k"][k] for s in stats]))
            for k in sorted(common_ks, key=int)
        },
        "maj_at_k": macro("maj_at_k"),
        "mean_tokens": mean_tokens,
        "median_tokens": macro("median_tokens"),
        "tokens_per_correct": (
            mean_tokens / accuracy if mean_tokens is not None and accuracy else None
        ),
        "truncated_fraction": macro("truncated_fraction"),
        "ungraded": sum(s["ungraded"] for s in stats),
    }


# --- markdown ----------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def format_percent(fraction: Any) -> str:
    """0.412 -> '41.2'; 'n/a' when missing."""
    return f"{100 * fraction:.1f}" if _is_number(fraction) else "n/a"


def format_accuracy(stats: Mapping[str, Any]) -> str:
    """Accuracy with its CI in percent: '41.2 (38.0–44.5)'."""
    text = format_percent(stats.get("accuracy"))
    ci = stats.get("accuracy_ci95")
    if isinstance(ci, Sequence) and len(ci) == 2 and all(_is_number(x) for x in ci):
        text += f" ({format_percent(ci[0])}–{format_percent(ci[1])})"
    return text


def format_pass_at_k(stats: Mapping[str, Any]) -> str:
    """pass@k at the largest k, in percent; '@k' added when that k is not the row's k."""
    pass_k = stats.get("pass_at_k") or {}
    if not pass_k:
        return "n/a"
    k = max(pass_k, key=int)
    text = format_percent(pass_k[k])
    return text if str(stats.get("samples_per_problem")) == k else f"{text} @{k}"


def format_tokens(value: Any) -> str:
    return f"{value:.0f}" if _is_number(value) else "n/a"


def stats_cells(stats: Mapping[str, Any], median: bool = True) -> list[str]:
    """Table cells of one stats dict: problems, k, avg@k (CI), pass@k, maj@k, mean tokens,
    [median tokens,] tokens/correct, truncated %."""
    cells = [
        str(stats.get("num_problems", "n/a")),
        str(stats.get("samples_per_problem", "n/a")),
        format_accuracy(stats),
        format_pass_at_k(stats),
        format_percent(stats.get("maj_at_k")),
        format_tokens(stats.get("mean_tokens")),
        format_tokens(stats.get("median_tokens")),
        format_tokens(stats.get("tokens_per_correct")),
        format_percent(stats.get("truncated_fraction")),
    ]
    if not median:
        del cells[6]
    return cells


def summary_markdown(summary: Mapping[str, Any], title: str | None = None) -> str:
    """One table row per benchmark plus 'overall'; rates in percent, tokens rounded."""
    lines = [f"## {title}", ""] if title else []
    lines += [
        "| benchmark | problems | k | avg@k (95% CI) | pass@k | maj@k | mean tokens "
        "| median tokens | tokens/correct | truncated % |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    named = [*summary.get("benchmarks", {}).items(), ("overall", summary.get("overall"))]
    for name, stats in named:
        if not isinstance(stats, Mapping):
            continue
        cells = [f"**{name}**" if name == "overall" else name, *stats_cells(stats)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines + _votes_markdown(summary)) + "\n"


def _votes_markdown(summary: Mapping[str, Any]) -> list[str]:
    votes = (summary.get("overall") or {}).get("votes")
    if not votes:
        return []
    lines = [
        "",
        "| vote (overall) | accuracy | tokens spent per problem | all k decoded |",
        "|---|---:|---:|---:|",
    ]
    for name, v in votes.items():
        cells = [
            name,
            format_percent(v["accuracy"]),
            format_tokens(v["tokens_spent"]),
            format_tokens(v["tokens_all_k"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
