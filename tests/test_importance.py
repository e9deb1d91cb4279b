"""Importance-sampling correction of the rollout/trainer mismatch: the four modes by hand, the
weights in the loss, and the HF engine's sampling log-probs against the trainer's."""

import pytest
import torch
from losses import ppo_clip_loss

from frugalrl.algo.importance import IS_CORRECTIONS, importance_weights
from frugalrl.config import load_config
from frugalrl.errors import UserError
from frugalrl.train import loop
from frugalrl.train.metrics import read_metrics

# old log-probs 0; rollout log-probs chosen so that rho = pi_old / pi_rollout is as written.
RHO = [[0.5, 3.0, 7.0], [1.5, 1.2, 4.0]]
ROLLOUT = -torch.log(torch.tensor(RHO))
OLD = torch.zeros(2, 3)
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)  # row 0's third token is padding


def weights(mode):
    return importance_weights(mode, OLD, ROLLOUT, MASK, clip_min=0.6, clip_max=2.0)


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected), atol=1e-6, rtol=0)


def test_token_modes_by_hand():
    # padding gets log rho = 0, i.e. rho = 1
    close(weights("token_truncate"), [[0.6, 2.0, 1.0], [1.5, 1.2, 2.0]])
    close(weights("token_mask"), [[0.0, 0.0, 1.0], [1.5, 1.2, 0.0]])


def test_sequence_modes_by_hand():
    # row 0: 0.5 * 3 = 1.5 (padding ignored); row 1: 1.5 * 1.2 * 4 = 7.2
    close(weights("sequence_truncate"), [[1.5], [2.0]])
    close(weights("sequence_mask"), [[1.5], [0.0]])


def test_missing_rollout_logprobs_count_as_on_policy():
    rollout = ROLLOUT.clone()
    rollout[1, 0] = float("nan")
    w = importance_weights("token_truncate", OLD, rollout, MASK, None, 2.0)
    assert w[1, 0] == 1.0


def test_weights_are_detached_and_names_registered():
    old = OLD.clone().requires_grad_()
    assert not importance_weights("token_truncate", old, ROLLOUT, MASK).requires_grad
    assert IS_CORRECTIONS.names() == [
        "sequence_mask",
        "sequence_truncate",
        "token_mask",
        "token_truncate",
    ]


def test_weights_scale_the_policy_term_before_the_kl():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -1.1]], requires_grad=True)
    adv = torch.tensor([1.0, -0.5])
    ref = logp.detach() - 0.1
    kwargs = {"ref_logp": ref, "beta": 0.1, "aggregation": "token_mean"}
    plain = ppo_clip_loss(logp, logp.detach(), adv, MASK, **kwargs)
    no_kl = ppo_clip_loss(logp, logp.detach(), adv, MASK, aggregation="token_mean")
    doubled = ppo_clip_loss(
        logp, logp.detach(), adv, MASK, is_weights=torch.full((2, 1), 2.0), **kwargs
    )
    # policy term doubled, KL term unchanged
    torch.testing.assert_close(doubled.loss, plain.loss + no_kl.loss, atol=1e-6, rtol=0)


def test_hf_engine_logprobs_match_the_trainer(tiny_overrides):
    # Same model, fp32, no top-p: the engine's sampling log-probs are the trainer's, rho = 1.
    config = load_config(
        "recipes/demo.yaml",
        [
            *tiny_overrides,
            "eval.before=false",
            "eval.after=false",
            "train.steps=1",
            "rollout.temperature=0.7",
            "rollout.importance_sampling=token_truncate",
        ],
    )
    loop.train(config)
    (row,) = read_metrics(config.run_dir / "metrics.jsonl")
    assert row["train/rollout_logprob_abs_diff"] < 1e-4
    assert row["train/is_weight_mean"] == pytest.approx(1.0, abs=1e-4)
    assert row["train/is_raw_weight_mean"] == pytest.approx(1.0, abs=1e-4)
    assert row["train/is_raw_weight_max"] == pytest.approx(1.0, abs=1e-3)


def test_an_engine_without_logprobs_is_a_clear_error(tiny_overrides):
    config = load_config(
        "recipes/demo.yaml",
        [
            *tiny_overrides,
            "eval.before=false",
            "eval.after=false",
            "train.steps=1",
            "rollout.engine=hf-generate",
            "rollout.importance_sampling=token_mask",
        ],
    )
    with pytest.raises(UserError, match="does not report them"):
        loop.train(config)


def test_unknown_mode_fails_at_config_time(tiny_overrides):
    with pytest.raises(UserError, match="importance sampling correction"):
        load_config("recipes/demo.yaml", [*tiny_overrides, "rollout.importance_sampling=nope"])
