"""Which problems go into each batch: a seeded reshuffle per epoch, resumable."""

from __future__ import annotations

import random


class PromptSampler:
    """Draws indices without replacement; a new seeded permutation every epoch.

    The state is two integers, so a resumed run continues with exactly the problems an
    uninterrupted run would have seen.
    """

    def __init__(self, num_items: int, seed: int) -> None:
        self.num_items, self.seed = num_items, seed
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        order = list(range(self.num_items))
        random.Random(f"{self.seed}-{self.epoch}").shuffle(order)
        return order

    @property
    def position(self) -> int:
        """How many indices have been drawn so far: names each draw uniquely over the run."""
        return self.epoch * self.num_items + self.cursor

    def next(self, n: int) -> list[int]:
        out = []
        while len(out) < n:
            if self.cursor == self.num_items:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation()
            take = min(n - len(out), self.num_items - self.cursor)
            out += self._order[self.cursor : self.cursor + take]
            self.cursor += take
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._order = self._permutation()
