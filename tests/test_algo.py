"""Advantage estimators, KL estimators, loss aggregations and the PPO-clip loss, against hand arithmetic."""

import inspect
import math

import pytest
import torch
from losses import ppo_clip_loss

from frugalrl.algo import (
    ADVANTAGES,
    KL_ESTIMATORS,
    LOSS_AGGREGATIONS,
    aggregate_loss,
    group_advantages,
    sequence_weights,
)
from frugalrl.errors import UserError

NAN = float("nan")


def close(actual: torch.Tensor, expected: list, tol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=tol, rtol=0)


# Group 0 has mean 2 and unbiased std sqrt(((0-2)^2 + 0 + (4-2)^2) / 2) = 2.
# Group 1 has one NaN and two equal valid rewards: mean 1, std 0.
REWARDS = torch.tensor([[0.0, 2.0, 4.0], [1.0, NAN, 1.0]])


# ---------------------------------------------------------------- advantages


def test_grpo_group_std_and_nan():
    # group 0: (r - 2) / 2 = [-1, 0, 1]; group 1: zero variance -> 0, NaN -> 0
    close(group_advantages("grpo", REWARDS, eps=0.0), [[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    # with eps: -2 / (2 + 1e-4) = -0.99995000
    close(group_advantages("grpo", REWARDS, eps=1e-4)[0], [-0.99995, 0.0, 0.99995])


def test_grpo_unbiased_std_on_binary_rewards():
    # mean 0.5, var = 4 * 0.25 / 3 = 1/3, std = 0.5773503; 0.5 / (0.5773503 + 1e-4) = 0.8658755
    adv = group_advantages("grpo", torch.tensor([[1.0, 0.0, 0.0, 1.0]]), eps=1e-4)
    close(adv, [[0.8658755, -0.8658755, -0.8658755, 0.8658755]])


@pytest.mark.parametrize("eps", [1e-4, 0.0])
def test_single_valid_sample_and_all_nan_give_zero(eps):
    rewards = torch.tensor([[5.0, NAN, NAN], [NAN, NAN, NAN]])
    for name in ADVANTAGES.names():
        takes_eps = "eps" in inspect.signature(ADVANTAGES.get(name)).parameters
        adv = group_advantages(name, rewards, **({"eps": eps} if takes_eps else {}))
        close(adv, [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])


def test_nan_does_not_shift_the_baseline():
    # the NaN is dropped: [0, 2, 4] as in REWARDS, so the same advantages, 0 at the NaN
    rewards = torch.tensor([[0.0, NAN, 2.0, 4.0]])
    close(group_advantages("grpo", rewards, eps=0.0), [[-1.0, 0.0, 0.0, 1.0]])
    close(group_advantages("dr_grpo", rewards), [[-2.0, 0.0, 0.0, 2.0]])


def test_dr_grpo():
    # r - mean_g: [0-2, 2-2, 4-2], [1-1, NaN -> 0, 1-1]
    close(group_advantages("dr_grpo", REWARDS), [[-2.0, 0.0, 2.0], [0.0, 0.0, 0.0]])


def test_rloo():
    # group 0: 0 - (2+4)/2 = -3, 2 - (0+4)/2 = 0, 4 - (0+2)/2 = 3; group 1: 1 - 1/1 = 0
    close(group_advantages("rloo", REWARDS), [[-3.0, 0.0, 3.0], [0.0, 0.0, 0.0]])
    # 1 - (0+0+1)/3 = 2/3, 0 - (1+0+1)/3 = -2/3
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    close(group_advantages("rloo", rewards), [[2 / 3, -2 / 3, -2 / 3, 2 / 3]])


def test_grpo_batch_std():
    # a = r - mean_g = [-2, 0, 2 | 0, -, 0]; valid a: n=5, mean 0, var = 8/4 = 2, std = sqrt(2)
    # a / sqrt(2): -2 / 1.4142136 = -1.4142136
    close(
        group_advantages("grpo_batch_std", REWARDS, eps=0.0),
        [[-1.4142136, 0.0, 1.4142136], [0, 0, 0]],
    )


def test_reinforce_pp():
    # a = [-2, 0, 2 | 1-0.5=0.5, 0-0.5=-0.5]; batch mean 0, var = (4+4+0.25+0.25)/4 = 2.125
    # std = 1.4577380; a / std = [-1.3719887, 0, 1.3719887, 0.3429972, -0.3429972]
    rewards = torch.tensor([[0.0, 2.0, 4.0], [1.0, 0.0, NAN]])
    close(
        group_advantages("reinforce_pp", rewards, eps=0.0),
        [[-1.3719887, 0.0, 1.3719887], [0.3429972, -0.3429972, 0.0]],
    )


def test_advantages_reject_flat_rewards():
    with pytest.raises(ValueError, match="num_prompts, G"):
        group_advantages("grpo", torch.tensor([1.0, 0.0]), eps=1e-4)


# ---------------------------------------------------------------- KL estimators

LOGP = torch.tensor([0.0, -1.0, -0.5])
REF = torch.tensor([-1.0, 0.0, -0.5])


def test_k1():
    close(KL_ESTIMATORS.get("k1")(LOGP, REF), [1.0, -1.0, 0.0])  # logp - ref


def test_k2():
    close(KL_ESTIMATORS.get("k2")(LOGP, REF), [0.5, 0.5, 0.0])  # 0.5 * (+-1)^2


def test_k3():
    # d = ref - logp = [-1, 1, 0]: e^-1 + 1 - 1 = 0.3678794; e^1 - 1 - 1 = 0.7182818; 1 - 0 - 1 = 0
    close(KL_ESTIMATORS.get("k3")(LOGP, REF), [0.3678794, 0.7182818, 0.0])


# ---------------------------------------------------------------- aggregations

# row 2 has no valid tokens, and garbage (NaN, inf) in its padding must not leak through.
PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, NAN, 0.0], [math.inf, NAN, 9.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)


def aggregate(name: str, per_token=PER_TOKEN, mask=MASK, max_len=4) -> torch.Tensor:
    return aggregate_loss(per_token, mask, sequence_weights(name, mask, max_len))


def test_seq_mean_token_mean():
    # sequence means 6/3 = 2, 4/1 = 4, empty -> 0; mean over 3 sequences = 6/3 = 2
    close(aggregate("seq_mean_token_mean"), 2.0)
    close(aggregate("seq_mean_token_mean", mask=MASK.float()), 2.0)


def test_token_mean():
    # (1 + 2 + 3 + 4) / 4 tokens = 2.5
    close(aggregate("token_mean"), 2.5)


def test_seq_mean_token_sum_norm():
    # sums 6, 4, 0 divided by 4 = 1.5, 1, 0; mean = 2.5 / 3 = 0.8333333
    close(aggregate("seq_mean_token_sum_norm"), 0.8333333)
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate("seq_mean_token_sum_norm", max_len=None)


def test_aggregations_of_an_empty_mask_are_zero():
    empty = torch.zeros(3, 3, dtype=torch.bool)
    for name in LOSS_AGGREGATIONS.names():
        close(aggregate(name, mask=empty), 0.0)


# ---------------------------------------------------------------- PPO-clip loss

# One token per completion, old_logp = 0, so ratio = exp(logp). eps = 0.2 -> clip range [0.8, 1.2].
#   ratio 1.5, A=+1: min(1.5, 1.2) = 1.2   -> -1.2, clipped (too high for A > 0), grad 0
#   ratio 1.5, A=-1: min(-1.5, -1.2) = -1.5 -> 1.5, unclipped,                    grad -1.5 * -1
#   ratio 0.5, A=+1: min(0.5, 0.8) = 0.5   -> -0.5, unclipped,                    grad -0.5 * 1
#   ratio 0.5, A=-1: min(-0.5, -0.8) = -0.8 -> 0.8, clipped (too low for A < 0),  grad 0
#   ratio 1.1, A=+2: min(2.2, 2.2) = 2.2   -> -2.2, inside the range,            grad -1.1 * 2
RATIOS = [1.5, 1.5, 0.5, 0.5, 1.1]
ADVS = torch.tensor([1.0, -1.0, 1.0, -1.0, 2.0])


def clip_case():
    logp = torch.log(torch.tensor(RATIOS)).unsqueeze(1).requires_grad_()
    return logp, torch.zeros(5, 1), torch.ones(5, 1)


def test_ppo_clip_inside_and_outside_the_range():
    logp, old, mask = clip_case()
    out = ppo_clip_loss(logp, old, ADVS, mask)
    close(out.loss, (-1.2 + 1.5 - 0.5 + 0.8 - 2.2) / 5)  # = -0.32
    assert out.clip_fraction == pytest.approx(2 / 5)
    assert out.ratio_mean == pytest.approx((1.5 + 1.5 + 0.5 + 0.5 + 1.1) / 5)  # 1.02
    assert out.kl == 0.0
    out.loss.backward()
    # d(-ratio * A / 5)/dlogp = -ratio * A / 5 where unclipped
    close(logp.grad, [[0.0], [0.3], [-0.1], [0.0], [-0.44]])


def test_ppo_clip_higher():
    # ratio 1.25, A=+1: clipped at 1.2 with eps_high 0.2, free with eps_high 0.28 (DAPO)
    logp = torch.log(torch.tensor([[1.25]]))
    old, adv, mask = torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1)
    low = ppo_clip_loss(logp, old, adv, mask, eps_high=0.2)
    high = ppo_clip_loss(logp, old, adv, mask, eps_high=0.28)
    close(low.loss, -1.2)
    assert low.clip_fraction == 1.0
    close(high.loss, -1.25)
    assert high.clip_fraction == 0.0


def test_ppo_clip_fraction_ignores_padding():
    # the padded token has ratio e^1 = 2.72 and A > 0, but is masked: 0 of 1 valid tokens clipped
    logp = torch.tensor([[0.0, 1.0]])
    out = ppo_clip_loss(logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.tensor([[1.0, 0.0]]))
    assert out.clip_fraction == 0.0
    assert out.ratio_mean == 1.0


def test_ppo_kl_penalty():
    # ratio 1, A = 0.5: surrogate -0.5 per token; k3 = [0.3678794, 0.7182818] (see test_k3)
    # tokens: -0.5 + 0.1 * 0.3678794 = -0.4632121, -0.5 + 0.1 * 0.7182818 = -0.4281718
    # seq mean: (-0.4632121 - 0.4281718) / 2 = -0.4456919; kl stat (0.3678794 + 0.7182818) / 2
    logp = torch.tensor([[0.0, -1.0]])
    ref = torch.tensor([[-1.0, 0.0]])
    adv, mask = torch.tensor([0.5]), torch.ones(1, 2)
    out = ppo_clip_loss(logp, logp, adv, mask, ref_logp=ref, beta=0.1)
    close(out.loss, -0.4456919)
    assert out.kl == pytest.approx(0.5430806)
    # k1 = [1, -1]: tokens -0.4, -0.6 -> mean -0.5; mean KL 0
    out = ppo_clip_loss(logp, logp, adv, mask, ref_logp=ref, beta=0.1, kl_estimator="k1")
    close(out.loss, -0.5)
    assert out.kl == pytest.approx(0.0)
    # beta = 0: KL is reported but not added
    out = ppo_clip_loss(logp, logp, adv, mask, ref_logp=ref, beta=0.0)
    close(out.loss, -0.5)
    assert out.kl == pytest.approx(0.5430806)
    with pytest.raises(ValueError, match="ref_logp"):
        ppo_clip_loss(logp, logp, adv, mask, beta=0.1)


def reference_loss(logp, old, adv, mask, eps_low, eps_high, ref, beta, per_sequence):
    """The GRPO/DAPO loss written out token by token, independently of frugalrl."""
    seq_losses, all_tokens = [], []
    for i in range(logp.shape[0]):
        tokens = []
        for t in range(logp.shape[1]):
            if not mask[i, t]:
                continue
            ratio = torch.exp(logp[i, t] - old[i, t])
            clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
            x = -torch.minimum(ratio * adv[i], clipped * adv[i])
            if beta:
                d = ref[i, t] - logp[i, t]
                x = x + beta * (torch.exp(d) - d - 1)
            tokens.append(x)
        seq_losses.append(sum(tokens) / max(len(tokens), 1))
        all_tokens.extend(tokens)
    if per_sequence:
        return sum(seq_losses) / len(seq_losses)
    return sum(all_tokens) / len(all_tokens)


@pytest.mark.parametrize(
    ("aggregation", "eps_high", "beta"),
    [("token_mean", 0.28, 0.0), ("seq_mean_token_mean", 0.2, 0.04)],
)
def test_ppo_clip_loss_matches_reference(aggregation, eps_high, beta):
    g = torch.Generator().manual_seed(0)
    logp0 = -torch.rand(3, 5, generator=g) * 2
    old = logp0 + torch.randn(3, 5, generator=g) * 0.3  # ratios spread across the clip range
    ref = logp0 + torch.randn(3, 5, generator=g) * 0.3
    adv = torch.tensor([1.0, -0.5, 2.0])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.float)

    logp = logp0.clone().requires_grad_()
    out = ppo_clip_loss(
        logp, old, adv, mask, eps_high=eps_high, ref_logp=ref, beta=beta, aggregation=aggregation
    )
    out.loss.backward()

    logp_ref = logp0.clone().requires_grad_()
    per_sequence = aggregation == "seq_mean_token_mean"
    expected = reference_loss(logp_ref, old, adv, mask, 0.2, eps_high, ref, beta, per_sequence)
    expected.backward()

    assert 0 < out.clip_fraction < 1  # the case exercises clipping
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(logp.grad, logp_ref.grad)


# ---------------------------------------------------------------- registries


def clip_loss(**kwargs):
    logp, old, mask = clip_case()
    return ppo_clip_loss(logp, old, ADVS, mask, **kwargs)


@pytest.mark.parametrize(
    ("registry", "call"),
    [
        (ADVANTAGES, lambda: group_advantages("nope", REWARDS)),
        (KL_ESTIMATORS, lambda: clip_loss(kl_estimator="nope")),
        (LOSS_AGGREGATIONS, lambda: clip_loss(aggregation="nope")),
    ],
)
def test_unknown_name_lists_valid_choices(registry, call):
    with pytest.raises(UserError) as info:
        call()
    for name in registry.names():
        assert name in str(info.value)


def test_registered_names():
    assert ADVANTAGES.names() == [
        "dr_grpo",
        "grpo",
        "grpo_batch_std",
        "reinforce_pp",
        "rloo",
        "rloo_batch_whiten",
    ]
    assert KL_ESTIMATORS.names() == ["k1", "k2", "k3"]
    assert LOSS_AGGREGATIONS.names() == [
        "seq_mean_token_mean",
        "seq_mean_token_sum_norm",
        "token_mean",
    ]
