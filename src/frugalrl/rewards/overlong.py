"""Soft overlong punishment (DAPO): a penalty ramping up over the last tokens before the cap."""

from __future__ import annotations

from collections.abc import Sequence

from frugalrl.errors import UserError
from frugalrl.rewards.registry import REWARDS
from frugalrl.sample import Sample


@REWARDS.register("overlong")
def overlong(
    samples: Sequence[Sample], max_len: int = 20480, cache_len: int = 4096
) -> list[float | None]:
    """With L = ``num_tokens``, Lmax = ``max_len``, Lcache = ``cache_len`` (DAPO's 20480, 4096):

    r = 0                           if L ≤ Lmax − Lcache
    r = ((Lmax − Lcache) − L)/Lcache  if Lmax − Lcache < L ≤ Lmax   (a ramp from 0 down to −1)
    r = −1                          if L > Lmax

    Length only: correctness and ``finished`` play no part (DAPO adds this to the accuracy
    reward). Set ``max_len`` to the generation cap, so truncated completions get −1.
    """
    if not 0 < cache_len <= max_len:
        raise UserError(
            f"reward 'overlong': cache_len must be in (0, max_len={max_len}], got {cache_len}"
        )
    start = max_len - cache_len
    values: list[float | None] = []
    for sample in samples:
        length = sample.num_tokens
        if length <= start:
            values.append(0.0)
        elif length <= max_len:
            values.append((start - length) / cache_len)
        else:
            values.append(-1.0)
    return values
