"""frugalrl's policy losses against TRL's own ``GRPOTrainer._compute_loss``, the independent oracle.

TRL's loss is run, not re-typed: a ``GRPOTrainer`` is made with ``__new__`` (no model, no data),
given the attributes ``_compute_loss`` reads, set from a real ``GRPOConfig`` the way
``GRPOTrainer.__init__`` sets them, and its per-token log-prob function is replaced by one that
returns our log-prob tensor. Gradients then flow from TRL's loss back to that tensor, so loss
and d loss / d logp are compared. Options TRL lacks (dual-clip, KL in the reward, the RLOO
estimators) and our deliberate differences are checked by hand arithmetic.

The policy losses: TRL's ``loss_type`` "cispo" = cispo (token_mean), "sapo" = sapo
(seq_mean_token_mean), "grpo" with ``importance_sampling_level="sequence"`` = gspo.

Mapping: TRL "grpo" = seq_mean_token_mean, "bnpo" = token_mean, "dr_grpo" =
seq_mean_token_sum_norm, "dapo" = token_mean over the whole accumulation window (see
test_dapo_normalises_by_the_window_bnpo_by_the_micro_batch).
"""

import itertools
from collections import defaultdict

import pytest
import torch
from losses import objective_loss, ppo_clip_loss

from frugalrl.algo import (
    aggregate_loss,
    group_advantages,
    kl_penalized_rewards,
    sequence_weights,
)
from frugalrl.errors import UserError

trl = pytest.importorskip("trl")
from accelerate import Accelerator  # noqa: E402  (installed with trl)
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

# GRPOConfig passes transformers' own deprecated default; nothing to act on here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`gradient_checkpointing` is deprecated:FutureWarning"
)

TOL = 1e-5
AGGREGATION = {
    "grpo": "seq_mean_token_mean",
    "bnpo": "token_mean",
    "dr_grpo": "seq_mean_token_sum_norm",
    "dapo": "token_mean",  # one micro-batch = the whole window; see the micro-batch test
}
MAX_LEN = 8  # > T, so dr_grpo's constant divisor is visibly not the padded width


def close(actual: torch.Tensor, expected, tol: float = TOL) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, atol=tol, rtol=0)


def trl_trainer(
    loss_type: str,
    *,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    entropy_coef: float = 0.0,
    delta: float | None = None,
    bias_correction: bool = False,
    grad_accum: int = 1,
    **extra,
) -> GRPOTrainer:
    """A GRPOTrainer holding just what ``_compute_loss`` reads, in train mode, single process.

    ``steps_per_generation = grad_accum``: one generation batch is one accumulation window, so
    num_items_in_batch (the window's token count) is what dapo divides by.
    """
    args = GRPOConfig(
        output_dir="unused",  # never created: nothing is saved
        report_to="none",
        use_cpu=True,
        loss_type=loss_type,
        beta=beta,
        epsilon=eps_low,
        epsilon_high=eps_high,
        max_completion_length=MAX_LEN,
        entropy_coef=entropy_coef,
        delta=delta,
        use_bias_correction_kl=bias_correction,
        gradient_accumulation_steps=grad_accum,
        steps_per_generation=grad_accum,
        **extra,  # importance_sampling_level, sapo_temperature_pos/neg
    )
    t = GRPOTrainer.__new__(GRPOTrainer)
    t.args = args
    # As GRPOTrainer.__init__ sets them from args.
    t.loss_type = args.loss_type
    t.beta = args.beta
    t.epsilon_low = args.epsilon
    t.epsilon_high = args.epsilon_high if args.epsilon_high is not None else args.epsilon
    t.max_completion_length = args.max_completion_length
    t.importance_sampling_level = args.importance_sampling_level
    t.off_policy_mask_threshold = args.off_policy_mask_threshold
    t.top_entropy_quantile = args.top_entropy_quantile
    t.entropy_coef = args.entropy_coef
    t.use_adaptive_entropy = args.use_adaptive_entropy
    t._entropy_bonus_enabled = t.entropy_coef != 0.0 or t.use_adaptive_entropy
    t._last_world_entropy = float("inf")
    t._entropy_window_stats = None
    t.use_vllm = args.use_vllm
    t.vllm_importance_sampling_correction = args.vllm_importance_sampling_correction
    t.aux_loss_enabled = False  # not a MoE model
    # What Trainer provides at run time.
    # Made after GRPOConfig, which resets accelerate's shared state.
    t.accelerator = Accelerator(cpu=True)
    t.model = torch.nn.Module()  # only .training is read; a fresh Module is in train mode
    t.current_gradient_accumulation_steps = grad_accum
    t._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    return t


def trl_loss(
    trainer: GRPOTrainer,
    logp: torch.Tensor,
    old: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    window_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """TRL's ``_compute_loss`` on one micro-batch whose policy log-probs are ``logp``."""
    batch, width = logp.shape
    entropies = entropy if entropy is not None else torch.zeros_like(logp)

    def per_token_logps_and_entropies(*args, **kwargs):
        assert args[3] == width  # logits_to_keep: the completion width
        return logp, entropies, None

    trainer._get_per_token_logps_and_entropies = per_token_logps_and_entropies
    inputs = {
        "prompt_ids": torch.zeros(batch, 1, dtype=torch.long),
        "prompt_mask": torch.ones(batch, 1, dtype=torch.long),
        "completion_ids": torch.zeros(batch, width, dtype=torch.long),
        "completion_mask": mask.long(),
        "advantages": adv,
        "old_per_token_logps": old,
        # As _generate_and_score_completions: the token count of the whole generation batch.
        "num_items_in_batch": window_tokens if window_tokens is not None else mask.sum(),
    }
    if ref is not None:
        inputs["ref_per_token_logps"] = ref
    return trainer._compute_loss(None, inputs)


# Ratios chosen to hit every branch with eps_low 0.2 and eps_high 0.2 or 0.28:
#   A > 0: 0.7 (free), 1.1 (free), 1.25 (clipped at 1.2, free at 1.28), 1.35 (clipped either way)
#   A < 0: 0.7 (clipped), 1.25 and 1.6 (free), 3.5 (free; above a dual-clip/delta cap of 3)
# Row 3 has no valid token; padding holds ordinary numbers because TRL masks by a product.
RATIOS = torch.tensor(
    [
        [0.7, 1.1, 1.25, 1.35, 1.0, 0.9],
        [0.7, 1.25, 1.6, 3.5, 1.2, 1.0],
        [1.25, 0.8, 1.0, 1.0, 1.0, 1.0],
        [1.3, 0.7, 1.0, 1.0, 1.0, 1.0],
    ]
)
ADV = torch.tensor([1.0, -0.7, 0.4, -1.2])
LENGTHS = [6, 4, 1, 0]
MASK = torch.tensor([[t < n for t in range(6)] for n in LENGTHS])


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Log-probs with the ratios above, a reference policy near them, and per-token entropies."""
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(4, 6, generator=g) * 2 - 0.1
    return {
        "logp": logp,
        "old": logp - torch.log(RATIOS),
        "ref": logp + torch.randn(4, 6, generator=g) * 0.3,
        "entropy": torch.rand(4, 6, generator=g) * 3,
    }


def both(loss_type: str, b: dict, trl_kwargs: dict, ours_kwargs: dict, with_entropy=False):
    """(TRL loss, TRL grad, our output, our grad); grads are d loss / d (logp[, entropy])."""
    ref = b["ref"] if trl_kwargs.get("beta", 0.0) else None
    logp_t = b["logp"].clone().requires_grad_()
    ent_t = b["entropy"].clone().requires_grad_() if with_entropy else None
    loss_t = trl_loss(
        trl_trainer(loss_type, **trl_kwargs), logp_t, b["old"], ADV, MASK, ref=ref, entropy=ent_t
    )
    inputs_t = (logp_t, ent_t) if with_entropy else (logp_t,)
    grad_t = torch.autograd.grad(loss_t, inputs_t)

    logp_o = b["logp"].clone().requires_grad_()
    ent_o = b["entropy"].clone().requires_grad_() if with_entropy else None
    out = ppo_clip_loss(
        logp_o,
        b["old"],
        ADV,
        MASK,
        ref_logp=b["ref"],
        entropy=ent_o,
        aggregation=AGGREGATION[loss_type],
        max_completion_length=MAX_LEN,
        **ours_kwargs,
    )
    inputs_o = (logp_o, ent_o) if with_entropy else (logp_o,)
    grad_o = torch.autograd.grad(out.loss, inputs_o)
    return loss_t, grad_t, out, grad_o


def assert_agree(loss_t, grad_t, out, grad_o) -> None:
    close(out.loss, loss_t.detach())
    for g_o, g_t in zip(grad_o, grad_t, strict=True):
        close(g_o, g_t)


# ---------------------------------------------------------------- against TRL


@pytest.mark.parametrize("eps_high", [0.2, 0.28])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_loss_and_gradient_match_trl(loss_type, beta, eps_high):
    b = batch()
    loss_t, grad_t, out, grad_o = both(
        loss_type,
        b,
        {"beta": beta, "eps_high": eps_high},
        {"beta": beta, "eps_high": eps_high, "kl_estimator": "k3"},
    )
    assert_agree(loss_t, grad_t, out, grad_o)
    # the batch exercises clipping, and the fully masked row gets no gradient
    assert 0 < out.clip_fraction < 1
    assert torch.all(grad_o[0][3] == 0) and torch.all(grad_o[0][~MASK] == 0)


def test_clip_higher_changes_the_loss():
    # guards the eps_high cases above: ratio 1.25 with A > 0 is clipped at 1.2 but not at 1.28
    b = batch()
    low = ppo_clip_loss(b["logp"], b["old"], ADV, MASK, eps_high=0.2)
    high = ppo_clip_loss(b["logp"], b["old"], ADV, MASK, eps_high=0.28)
    assert high.clip_fraction < low.clip_fraction
    assert not torch.isclose(low.loss, high.loss)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_kl_ratio_correction_matches_trl_default(loss_type):
    # TRL 1.16 multiplies the KL by the ratio by default (use_bias_correction_kl=True); ours is
    # off by default (GRPO, open-rs, verl) and matches TRL's default when switched on.
    b = batch()
    assert GRPOConfig.__dataclass_fields__["use_bias_correction_kl"].default is True
    loss_t, grad_t, out, grad_o = both(
        loss_type,
        b,
        {"beta": 0.04, "bias_correction": True},
        {"beta": 0.04, "kl_ratio_correction": True},
    )
    assert_agree(loss_t, grad_t, out, grad_o)


def test_kl_ratio_correction_changes_the_gradient_on_policy():
    # ratio = 1 everywhere: same loss value, but the ratio's gradient adds beta * KL per token
    b = batch()
    logp = b["logp"].clone().requires_grad_()
    kwargs = {"ref_logp": b["ref"], "beta": 0.04, "aggregation": "token_mean"}
    plain = ppo_clip_loss(logp, logp.detach(), ADV, MASK, **kwargs)
    (g_plain,) = torch.autograd.grad(plain.loss, logp)
    corrected = ppo_clip_loss(logp, logp.detach(), ADV, MASK, kl_ratio_correction=True, **kwargs)
    (g_corr,) = torch.autograd.grad(corrected.loss, logp)
    close(plain.loss, corrected.loss.detach())
    d = b["ref"] - b["logp"]
    k3 = torch.exp(d) - d - 1
    expected_extra = torch.where(MASK, 0.04 * k3, 0.0) / MASK.sum()  # d(ratio)/d(logp) = 1
    close(g_corr - g_plain, expected_extra)


@pytest.mark.parametrize("loss_type", ["bnpo", "dapo"])
def test_entropy_bonus_matches_trl_for_token_mean(loss_type):
    # TRL subtracts coef * token_mean(H); ours subtracts coef * H per token before aggregation,
    # which is the same thing when the aggregation is a token mean.
    b = batch()
    loss_t, grad_t, out, grad_o = both(
        loss_type,
        b,
        {"beta": 0.04, "entropy_coef": 0.01},
        {"beta": 0.04, "entropy_coef": 0.01},
        with_entropy=True,
    )
    assert_agree(loss_t, grad_t, out, grad_o)
    assert grad_o[1].abs().sum() > 0  # the bonus reaches the entropy


def test_entropy_bonus_differs_from_trl_for_grpo_on_purpose():
    # Deliberate: like verl, ours aggregates the entropy the way the policy term is aggregated
    # (here a mean of per-sequence means); TRL always takes a token mean of the entropy.
    # The two losses differ by exactly coef * (token_mean(H) - seq_mean_token_mean(H)).
    b = batch()
    loss_t, _, out, _ = both(
        "grpo", b, {"entropy_coef": 0.01}, {"entropy_coef": 0.01}, with_entropy=True
    )
    h = b["entropy"]
    tok = aggregate_loss(h, MASK, sequence_weights("token_mean", MASK))
    seq = aggregate_loss(h, MASK, sequence_weights("seq_mean_token_mean", MASK))
    assert not torch.isclose(tok, seq)
    close(out.loss - loss_t.detach(), 0.01 * (tok - seq))


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_dual_clip_matches_trl_two_sided_clipping(loss_type):
    # TRL's `delta` (INTELLECT-2 two-sided clipping) caps the unclipped ratio at delta; for
    # delta >= 1 + eps_high that is dual-clip with c = delta: for A < 0 both give
    # -A * min(max(ratio, clip(ratio)), c), for A > 0 the cap never binds. Ratio 3.5 with A < 0
    # is capped here.
    b = batch()
    loss_t, grad_t, out, grad_o = both(
        loss_type, b, {"beta": 0.04, "delta": 3.0}, {"beta": 0.04, "dual_clip_c": 3.0}
    )
    assert_agree(loss_t, grad_t, out, grad_o)
    assert out.dual_clip_fraction == pytest.approx(1 / MASK.sum().item())


# ---------------------------------------------------------------- GSPO, CISPO, SAPO against TRL

# (TRL loss_type, TRL GRPOConfig options) -> (our policy loss, its params, our aggregation).
# TRL's GSPO is loss_type "grpo" with sequence-level importance sampling; TRL's cispo takes its
# weight cap from epsilon_high and aggregates like dapo; sapo aggregates like grpo.
NEW_LOSSES = {
    "gspo eps 0.2/0.28": (
        ("grpo", {"eps_low": 0.2, "eps_high": 0.28, "importance_sampling_level": "sequence"}),
        ("gspo", {"eps_low": 0.2, "eps_high": 0.28}, "seq_mean_token_mean"),
    ),
    "gspo, the paper's eps": (
        ("grpo", {"eps_low": 3e-4, "eps_high": 4e-4, "importance_sampling_level": "sequence"}),
        ("gspo", {}, "seq_mean_token_mean"),
    ),
    "cispo, cap 5 (none binds)": (
        ("cispo", {"eps_high": 5.0}),
        ("cispo", {}, "token_mean"),
    ),
    "cispo, cap 1.3": (
        ("cispo", {"eps_high": 1.3}),
        ("cispo", {"max_weight": 1.3}, "token_mean"),
    ),
    "sapo": (("sapo", {}), ("sapo", {}, "seq_mean_token_mean")),
    "sapo, other temperatures": (
        ("sapo", {"sapo_temperature_pos": 2.0, "sapo_temperature_neg": 0.5}),
        ("sapo", {"tau_pos": 2.0, "tau_neg": 0.5}, "seq_mean_token_mean"),
    ),
}


def against_trl(case: str, *, beta: float = 0.0, bias_correction: bool = False):
    """(TRL loss, TRL d loss/d logp, our output, our d loss/d logp) for one NEW_LOSSES case."""
    (trl_type, trl_options), (name, params, aggregation) = NEW_LOSSES[case]
    b = batch()
    logp_t = b["logp"].clone().requires_grad_()
    trainer = trl_trainer(trl_type, beta=beta, bias_correction=bias_correction, **trl_options)
    ref = b["ref"] if beta else None
    loss_t = trl_loss(trainer, logp_t, b["old"], ADV, MASK, ref=ref)
    (grad_t,) = torch.autograd.grad(loss_t, logp_t)
    logp_o = b["logp"].clone().requires_grad_()
    out = objective_loss(
        name,
        logp_o,
        b["old"],
        ADV,
        MASK,
        aggregation=aggregation,
        beta=beta,
        ref_logp=b["ref"],
        kl_ratio_correction=bias_correction,
        **params,
    )
    (grad_o,) = torch.autograd.grad(out.loss, logp_o)
    return loss_t, grad_t, out, grad_o


@pytest.mark.parametrize(("beta", "bias_correction"), [(0.0, False), (0.04, False), (0.04, True)])
@pytest.mark.parametrize("case", list(NEW_LOSSES))
def test_new_losses_match_trl(case, beta, bias_correction):
    loss_t, grad_t, out, grad_o = against_trl(case, beta=beta, bias_correction=bias_correction)
    close(out.loss, loss_t.detach())
    close(grad_o, grad_t)
    assert torch.all(grad_o[3] == 0) and torch.all(grad_o[~MASK] == 0)
    assert grad_o.abs().sum() > 0


def test_the_new_losses_differ_off_policy():
    # The batch is off-policy (ratios far from 1): the four losses give four different gradients,
    # so the agreement above is not one loss compared four times.
    grads = [against_trl(case)[3] for case in ("gspo eps 0.2/0.28", "cispo, cap 1.3", "sapo")]
    grads.append(both("grpo", batch(), {"eps_high": 0.28}, {"eps_high": 0.28})[3][0])
    for x, y in itertools.combinations(grads, 2):
        assert not torch.allclose(x, y, atol=1e-3)


def test_cispo_cap_binds_where_the_ratio_exceeds_it():
    _, _, capped, _ = against_trl("cispo, cap 1.3")
    _, _, free, _ = against_trl("cispo, cap 5 (none binds)")
    # of the 11 valid tokens, 3 have a ratio above 1.3: 1.35 (row 0), 1.6 and 3.5 (row 1)
    assert capped.clip_fraction == pytest.approx(3 / 11)
    assert free.clip_fraction == 0.0


def test_token_mean_over_micro_batches_is_trl_dapo():
    # Two micro-batches of one accumulation window with 6 + 4 = 10 and 1 + 0 = 1 tokens.
    # TRL "dapo" divides every micro-batch's token sum by the window's 11 tokens; TRL "bnpo"
    # takes each micro-batch's token mean and averages them. frugalrl's loop computes the
    # aggregation's weights over the whole batch and sums the micro-batch losses, so token_mean
    # is "dapo" however the batch is cut (here unevenly), and never "bnpo".
    b = batch()
    halves = [slice(0, 2), slice(2, 4)]

    def trl_window(loss_type):
        trainer = trl_trainer(loss_type, beta=0.04, grad_accum=2)
        logp = b["logp"].clone().requires_grad_()
        total = sum(
            trl_loss(
                trainer,
                logp[h],
                b["old"][h],
                ADV[h],
                MASK[h],
                ref=b["ref"][h],
                window_tokens=MASK.sum(),
            )
            for h in halves
        )  # Trainer backpropagates each micro-batch loss unscaled (loss_is_scaled_for_ga)
        return total, torch.autograd.grad(total, logp)[0]

    def ours(micro_batches):
        logp = b["logp"].clone().requires_grad_()
        weights = sequence_weights("token_mean", MASK)
        total = sum(
            ppo_clip_loss(
                logp[h],
                b["old"][h],
                ADV[h],
                MASK[h],
                ref_logp=b["ref"][h],
                beta=0.04,
                aggregation="token_mean",
                seq_weights=weights[h],
            ).loss
            for h in micro_batches
        )
        return total, torch.autograd.grad(total, logp)[0]

    bnpo, dapo = trl_window("bnpo"), trl_window("dapo")
    for cut in (halves, [slice(0, 1), slice(1, 4)], [slice(0, 4)]):
        loss, grad = ours(cut)
        close(loss, dapo[0].detach())
        close(grad, dapo[1])
    assert not torch.isclose(bnpo[0], dapo[0])


@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_micro_batch_losses_sum_to_the_batch_loss(aggregation):
    # Any cut of the batch, with weights from the whole batch, gives the whole batch's loss.
    b = batch()
    kwargs = {"ref_logp": b["ref"], "beta": 0.04, "aggregation": aggregation}
    whole = ppo_clip_loss(b["logp"], b["old"], ADV, MASK, max_completion_length=8, **kwargs)
    weights = sequence_weights(aggregation, MASK, 8)
    cut = [slice(0, 1), slice(1, 3), slice(3, 4)]
    parts = sum(
        ppo_clip_loss(
            b["logp"][h],
            b["old"][h],
            ADV[h],
            MASK[h],
            ref_logp=b["ref"][h],
            beta=0.04,
            aggregation=aggregation,
            seq_weights=weights[h],
        ).loss
        for h in cut
    )
    close(parts, whole.loss)


def test_micro_batch_token_mean_by_hand():
    # per-token losses [1, 2, 3] (3 tokens) and [4] (1 token) in two micro-batches:
    # the mean of micro-batch token means would be (2 + 4) / 2 = 3; over the batch 10 / 4 = 2.5.
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    weights = sequence_weights("token_mean", mask)
    close(weights, torch.tensor([0.25, 0.25]))
    parts = [aggregate_loss(per_token[h], mask[h], weights[h]) for h in (slice(0, 1), slice(1, 2))]
    close(sum(parts), 2.5)


# ---------------------------------------------------------------- by hand: dual-clip

# 2 x 2, old_logp = 0 so ratio = exp(logp); eps 0.2 -> clip range [0.8, 1.2]; c = 3.
#   row 0, A = -1: ratio 4 -> -min(-4, -1.2) = 4, capped at -c*A = 3 (dual-clipped, grad 0)
#                  ratio 2 -> -min(-2, -1.2) = 2 < 3, unchanged, grad d(-ratio*A) = ratio = 2
#   row 1, A = +1: ratio 4 -> -min(4, 1.2) = -1.2 (clipped, grad 0)
#                  ratio 1 -> -1, grad -ratio*A = -1
# seq_mean_token_mean: row means (3 + 2)/2 = 2.5 and (-1.2 - 1)/2 = -1.1 -> (2.5 - 1.1)/2 = 0.7;
# grads are divided by 2 tokens * 2 rows = 4. Without dual-clip row 0 is (4 + 2)/2 = 3 -> 0.95.
DUAL_RATIOS = [[4.0, 2.0], [4.0, 1.0]]
DUAL_ADV = torch.tensor([-1.0, 1.0])


def dual_case(**kwargs):
    logp = torch.log(torch.tensor(DUAL_RATIOS)).requires_grad_()
    out = ppo_clip_loss(logp, torch.zeros(2, 2), DUAL_ADV, torch.ones(2, 2), **kwargs)
    (grad,) = torch.autograd.grad(out.loss, logp)
    return out, grad


def test_dual_clip_by_hand():
    out, grad = dual_case(dual_clip_c=3.0)
    close(out.loss, 0.7)
    close(grad, [[0.0, 0.5], [0.0, -0.25]])
    assert out.clip_fraction == pytest.approx(1 / 4)  # row 1 token 0 only, as without dual-clip
    assert out.dual_clip_fraction == pytest.approx(1 / 4)  # row 0 token 0

    plain, grad = dual_case()
    close(plain.loss, 0.95)
    close(grad, [[1.0, 0.5], [0.0, -0.25]])
    assert plain.clip_fraction == out.clip_fraction
    assert plain.dual_clip_fraction == 0.0


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_dual_clip_needs_c_above_one(c):
    with pytest.raises(UserError, match="policy loss 'ppo_clip': dual_clip_c must be > 1"):
        dual_case(dual_clip_c=c)


# ---------------------------------------------------------------- by hand: entropy bonus

# ratio 1 and A = 0, so only the bonus is left: x_t = -0.1 * H_t.
# H = [[1, 3], [4, pad]]: seq_mean_token_mean ((1+3)/2 + 4)/2 = 3 -> -0.3;
# token_mean (1+3+4)/3 = 8/3 -> -0.2666667; seq_mean_token_sum_norm (4 + 4)/2/4 = 1 -> -0.1.
ENT_MASK = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)


@pytest.mark.parametrize(
    ("aggregation", "expected", "grad"),
    [
        ("seq_mean_token_mean", -0.3, [[-0.025, -0.025], [-0.05, 0.0]]),  # -0.1 / (2 * len)
        ("token_mean", -0.2666667, [[-0.1 / 3, -0.1 / 3], [-0.1 / 3, 0.0]]),
        ("seq_mean_token_sum_norm", -0.1, [[-0.0125, -0.0125], [-0.0125, 0.0]]),  # -0.1 / (2*4)
    ],
)
def test_entropy_bonus_by_hand(aggregation, expected, grad):
    entropy = torch.tensor([[1.0, 3.0], [4.0, float("nan")]], requires_grad=True)
    logp = torch.zeros(2, 2)
    out = ppo_clip_loss(
        logp,
        logp,
        torch.zeros(2),
        ENT_MASK,
        entropy=entropy,
        entropy_coef=0.1,
        aggregation=aggregation,
        max_completion_length=4,
    )
    close(out.loss, expected)
    close(torch.autograd.grad(out.loss, entropy)[0], grad)
    assert out.entropy == pytest.approx(8 / 3)  # token mean, whatever the aggregation


def test_entropy_bonus_needs_entropy():
    logp = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="entropy"):
        ppo_clip_loss(logp, logp, torch.zeros(2), ENT_MASK, entropy_coef=0.1)
    # coef 0: entropy is only reported, the loss is the plain one
    out = ppo_clip_loss(logp, logp, torch.ones(2), ENT_MASK, entropy=torch.ones(2, 2))
    close(out.loss, -1.0)
    assert out.entropy == 1.0


# ---------------------------------------------------------------- by hand: KL in the reward

# rewards [1, 0, NaN]; mask [[1, 1], [1, 0], [0, 0]]; beta 0.1.
# k1 = logp - ref: row 0 [-1 + 1.5, -2 + 1] = [0.5, -1], sum -0.5 -> 1 + 0.05 = 1.05;
# row 1 [0, (masked)] -> 0 - 0 = 0; row 2 stays NaN. The -inf in the padding must not leak in.
KL_LOGP = torch.tensor([[-1.0, -2.0], [-0.5, -1.0], [-1.0, -1.0]])
KL_REF = torch.tensor([[-1.5, -1.0], [-0.5, -float("inf")], [-float("inf"), 0.0]])
KL_MASK = torch.tensor([[1, 1], [1, 0], [0, 0]], dtype=torch.bool)
KL_REWARDS = torch.tensor([1.0, 0.0, float("nan")])


def test_kl_penalized_rewards_k1_by_hand():
    logp = KL_LOGP.clone().requires_grad_()
    out = kl_penalized_rewards(KL_REWARDS, logp, KL_REF, KL_MASK, beta=0.1)
    close(out[:2], [1.05, 0.0])
    assert torch.isnan(out[2])
    assert not out.requires_grad  # a reward carries no gradient


def test_kl_penalized_rewards_k3_by_hand():
    # row 0: d = ref - logp = [-0.5, 1]; k3 = e^-0.5 + 0.5 - 1 = 0.1065307, e - 2 = 0.7182818
    # sum 0.8248125 -> 1 - 0.1 * 0.8248125 = 0.9175188
    out = kl_penalized_rewards(KL_REWARDS, KL_LOGP, KL_REF, KL_MASK, beta=0.1, estimator="k3")
    close(out[:2], [0.9175188, 0.0])


def test_kl_penalized_rewards_beta_zero_and_errors():
    out = kl_penalized_rewards(KL_REWARDS, KL_LOGP, KL_REF, KL_MASK, beta=0.0)
    close(out[:2], [1.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        kl_penalized_rewards(KL_REWARDS[:2], KL_LOGP, KL_REF, KL_MASK, beta=0.1)
    with pytest.raises(ValueError, match="beta"):
        kl_penalized_rewards(KL_REWARDS, KL_LOGP, KL_REF, KL_MASK, beta=-0.1)


# ---------------------------------------------------------------- by hand: RLOO


def test_rloo_by_hand():
    # A_i = r_i - (sum_j r_j - r_i) / (n - 1): 1 - (0+0+1)/3 = 2/3, 0 - (1+0+1)/3 = -2/3
    adv = group_advantages("rloo", torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    close(adv, [[2 / 3, -2 / 3, -2 / 3, 2 / 3]])


def test_rloo_batch_whiten_by_hand():
    # RLOO: group 0 [2/3, -2/3, -2/3, 2/3]; group 1: 1 - 2/3 = 1/3 (x3), 0 - 3/3 = -1.
    # batch mean 0; unbiased var = (4 * 4/9 + 3 * 1/9 + 1) / 7 = (28/9) / 7 = 4/9, std 2/3.
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    adv = group_advantages("rloo_batch_whiten", rewards, eps=0.0)
    close(adv, [[1.0, -1.0, -1.0, 1.0], [0.5, 0.5, 0.5, -1.5]])
    # equal group sizes: RLOO is n/(n-1) times r - mean_g, and whitening removes the factor
    close(adv, group_advantages("reinforce_pp", rewards, eps=0.0))


def test_rloo_batch_whiten_with_nan_by_hand():
    # group 0 has n = 2 valid: 1 - 0 = 1, 0 - 1 = -1; group 1 n = 3: 1 - 0 = 1, 0 - 1/2 = -0.5.
    # valid a = [1, -1, 1, -0.5, -0.5]: mean 0, var = 3.5 / 4 = 0.875, std = 0.9354143
    # 1 / 0.9354143 = 1.0690450, 0.5 / 0.9354143 = 0.5345225; the NaN gets 0
    rewards = torch.tensor([[1.0, 0.0, float("nan")], [1.0, 0.0, 0.0]])
    adv = group_advantages("rloo_batch_whiten", rewards, eps=0.0)
    close(adv, [[1.0690450, -1.0690450, 0.0], [1.0690450, -0.5345225, -0.5345225]])
    # unequal group sizes weigh the groups differently from reinforce_pp
    assert not torch.allclose(adv, group_advantages("reinforce_pp", rewards, eps=0.0))
