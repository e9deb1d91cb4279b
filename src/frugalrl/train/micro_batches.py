"""Micro-batches of the training forward: which completions go together, and their layout.

A micro-batch is a set of completions (with their prompts) run through one forward and
backward. ``plan_micro_batches`` cuts a batch's completions into micro-batches by a token
budget over the positions their tensors hold, in the layout they will run in: padded
(``algo.logprobs.pack_batch``) or packed (``algo.packing.pack_rows``, ``train.packing``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from frugalrl.algo.logprobs import pack_batch
from frugalrl.algo.packing import attends_per_sequence, pack_rows
from frugalrl.config import Config

Layout = Literal["padded", "packed", "one_row"]


def layout_of(model, config: Config) -> Layout:
    """How micro-batches are laid out for ``model``: padded rows, or (``train.packing``) packed
    rows as wide as the longest sequence, or one packed row under flash attention
    (algo.packing)."""
    if not config.train.packing:
        return "padded"
    return "one_row" if attends_per_sequence(model) else "packed"


class _MicroBatchSize:
    """Positions (rows × width) of one micro-batch's tensors in ``layout`` as rows join it,
    longest first (so a packed micro-batch's width is its first row's length and adding rows
    one by one is exactly first-fit decreasing)."""

    def __init__(self, layout: Layout, prompt_lengths, completion_lengths) -> None:
        self.layout, self.prompts, self.completions = layout, prompt_lengths, completion_lengths
        self.clear()

    def clear(self) -> None:
        self.count = self.widest_prompt = self.widest_completion = self.total = 0
        self.free: list[int] = []  # room left in each packed row

    def _length(self, i: int) -> int:
        return self.prompts[i] + self.completions[i]

    def _fitting_row(self, n: int) -> int | None:
        return next((r for r, room in enumerate(self.free) if room >= n), None)

    def size(self) -> int:
        if self.layout == "padded":
            return self.count * (self.widest_prompt + self.widest_completion)
        if self.layout == "one_row":
            return self.total
        return len(self.free) * self.width if self.free else 0

    def with_row(self, i: int) -> int:
        """The size were row ``i`` added."""
        if self.layout == "padded":
            width = max(self.widest_prompt, self.prompts[i]) + max(
                self.widest_completion, self.completions[i]
            )
            return (self.count + 1) * width
        if self.layout == "one_row":
            return self.total + self._length(i)
        width = self._length(i) if not self.free else self.width
        rows = len(self.free) + (self._fitting_row(self._length(i)) is None)
        return rows * width

    def add(self, i: int) -> None:
        n = self._length(i)
        if not self.free:
            self.width = n
        row = self._fitting_row(n)
        if row is None:
            self.free.append(self.width)
            row = len(self.free) - 1
        self.free[row] -= n
        self.count += 1
        self.total += n
        self.widest_prompt = max(self.widest_prompt, self.prompts[i])
        self.widest_completion = max(self.widest_completion, self.completions[i])


def plan_micro_batches(
    prompt_lengths: Sequence[int],
    completion_lengths: Sequence[int],
    rows: Sequence[int],
    max_rows: int,
    max_tokens: int | None = None,
    layout: Layout = "padded",
) -> list[list[int]]:
    """Cut ``rows`` into micro-batches of at most ``max_rows`` rows.

    Without ``max_tokens``: consecutive runs of ``max_rows``, in the given order. With it, rows
    sorted longest first are added greedily while the micro-batch's tensors, as ``layout``
    lays them out, hold at most ``max_tokens`` positions: padded, rows × (longest prompt +
    longest completion) as ``pack_batch`` makes them; packed, rows × width as
    ``algo.packing.pack_rows`` makes them. A row longer than the budget gets a micro-batch of
    its own. Sorting puts sequences of similar length together, so little is padding.
    """
    if max_tokens is None:
        rows = list(rows)
        return [rows[i : i + max_rows] for i in range(0, len(rows), max_rows)]
    order = sorted(rows, key=lambda i: prompt_lengths[i] + completion_lengths[i], reverse=True)
    size = _MicroBatchSize(layout, prompt_lengths, completion_lengths)
    plan: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) == max_rows or size.with_row(i) > max_tokens):
            plan.append(current)
            current = []
            size.clear()
        current.append(i)
        size.add(i)
    if current:
        plan.append(current)
    return plan


def micro_batches_of(batch, rows: Sequence[int], config: Config, layout: Layout) -> list[list[int]]:
    """``plan_micro_batches`` over the completions ``rows`` of a rollout batch, by the recipe's
    ``train.micro_batch_size`` and ``train.micro_batch_tokens``."""
    return plan_micro_batches(
        [len(p) for p in batch.prompt_ids],
        [c.num_tokens for c in batch.completions],
        rows,
        config.train.micro_batch_size,
        config.train.micro_batch_tokens,
        layout,
    )


def layout_positions(batch, micro_batches: list[list[int]], layout: Layout) -> tuple[int, int]:
    """(positions of the micro-batches' tensors, prompt and completion tokens in them)."""
    prompts = [len(p) for p in batch.prompt_ids]
    completions = [c.num_tokens for c in batch.completions]
    size = _MicroBatchSize(layout, prompts, completions)
    positions = tokens = 0
    for idx in micro_batches:
        size.clear()
        for i in sorted(idx, key=lambda i: prompts[i] + completions[i], reverse=True):
            size.add(i)
        positions += size.size()
        tokens += size.total
    return positions, tokens


def micro_batch_tensors(
    batch, idx: list[int], pad_id: int, device, layout: Layout = "padded"
) -> dict[str, torch.Tensor]:
    """The model inputs of the completions ``idx`` of a rollout batch, laid out in ``layout``,
    on ``device``."""
    prompts = [batch.prompt_ids[i] for i in idx]
    completions = [batch.completions[i].token_ids for i in idx]
    if layout == "padded":
        packed = pack_batch(prompts, completions, pad_id)
    else:
        packed = pack_rows(prompts, completions, pad_id, one_row=layout == "one_row")
    return {k: v.to(device) for k, v in packed.items()}
