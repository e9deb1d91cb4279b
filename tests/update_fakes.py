"""Stand-ins for the optimizer and scheduler around ``policy_update``, and a batch of random
rows, so update tests compare the gradients a step would apply."""

import random

import torch

from frugalrl.rollout import Completion
from frugalrl.train.update import RolloutBatch


class RecordingOptimizer:
    """Stands in for AdamW: keeps the gradients each step would apply, moves nothing."""

    def __init__(self, model):
        self.model, self.grads = model, []
        self.param_groups = [{"lr": 0.0}]

    def step(self):
        self.grads.append([p.grad.clone() for p in self.model.parameters()])

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)


class NoScheduler:
    def get_last_lr(self):
        return [0.0]

    def step(self):
        pass


def random_batch(advantages, in_loss=None, seed: int = 1) -> RolloutBatch:
    """Rows of 2-6 prompt and 1-9 completion tokens, drawn with ``seed``."""
    rng = random.Random(seed)
    n = len(advantages)
    prompts = [[rng.randint(3, 200) for _ in range(rng.randint(2, 6))] for _ in range(n)]
    comps = [
        Completion(tuple(rng.randint(3, 200) for _ in range(rng.randint(1, 9))), "", True)
        for _ in range(n)
    ]
    in_loss = torch.ones(n, dtype=torch.bool) if in_loss is None else torch.tensor(in_loss)
    return RolloutBatch(prompts, comps, torch.tensor(advantages), in_loss)
