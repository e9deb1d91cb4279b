"""The default loss path, pinned: the first update of a fixed batch on the tiny model gives the
loss and gradient that the fused PPO-clip loss gave before the policy losses became a registry
(values recorded from commit 640c205). A refactor that changes the default numbers fails here."""

import pytest
import torch
from update_fakes import NoScheduler, RecordingOptimizer, random_batch

from frugalrl.config import Config
from frugalrl.policy import load_policy
from frugalrl.train.update import RolloutBatch, policy_update


def fixed_batch() -> RolloutBatch:
    batch = random_batch([1.1, -0.4, 0.0, 0.8, -1.3, 0.0], seed=7)
    return batch


CASES = {
    "default": {},
    "dapo-like, two passes": {
        "loss_aggregation": "token_mean",
        "epsilon_high": 0.28,
        "num_iterations": 2,
        "dual_clip_c": 3.0,
        "entropy_coef": 0.01,
        "kl_ratio_correction": True,
    },
}


def first_update(tiny_model_dir, algo: dict):
    model, tokenizer = load_policy(tiny_model_dir, "float32", torch.device("cpu"))
    ref, _ = load_policy(tiny_model_dir, "float32", torch.device("cpu"))
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        for p in ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    config = Config.model_validate({"algo": algo, "rollout": {"max_completion_tokens": 9}})
    batch = fixed_batch()
    if config.algo.num_iterations > 1:
        g = torch.Generator().manual_seed(3)
        batch.old_logps = {
            i: -torch.rand(c.num_tokens, generator=g) * 3 for i, c in enumerate(batch.completions)
        }
    optimizer = RecordingOptimizer(model)
    metrics = policy_update(
        model, ref, optimizer, NoScheduler(), batch, tokenizer.pad_token_id, config, "cpu"
    )
    grads = optimizer.grads[0]
    flat = torch.cat([g.flatten() for g in grads])
    return metrics, flat


def fingerprint(metrics, flat) -> dict[str, float]:
    return {
        "loss": metrics["train/loss"],
        "kl": metrics["train/kl"],
        "grad_sum": float(flat.sum()),
        "grad_abs_sum": float(flat.abs().sum()),
        "grad_0": float(flat[0]),
        "grad_last": float(flat[-1]),
    }


PINNED = {
    "default": {
        "loss": -0.0294671431183815,
        "kl": 0.10209190100431442,
        "grad_sum": -0.13193431496620178,
        "grad_abs_sum": 44.020565032958984,
        "grad_0": 0.00038870220305398107,
        "grad_last": -0.0005621032905764878,
    },
    "dapo-like, two passes": {
        "loss": 0.19371016323566437,
        "kl": 0.10209190100431442,
        "grad_sum": -0.018540024757385254,
        "grad_abs_sum": 0.8474231362342834,
        "grad_0": -5.593245333557206e-08,
        "grad_last": -5.51291013834998e-05,
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_first_update_gives_the_pinned_loss_and_gradient(tiny_model_dir, case):
    got = fingerprint(*first_update(tiny_model_dir, CASES[case]))
    for key, value in PINNED[case].items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
