"""The policy-loss registry: GSPO, CISPO and SAPO by hand, what each declares about advantage 0,
parameter checking, and the update's use of stated old log-probs (off-policy-aware batches)."""

import math

import pytest
import torch
from losses import objective_loss
from update_fakes import NoScheduler, RecordingOptimizer, random_batch

from frugalrl.algo import POLICY_LOSSES, PolicyObjective, PolicyTerm, register_policy_loss
from frugalrl.config import Config
from frugalrl.errors import UserError
from frugalrl.policy import load_policy
from frugalrl.train import update
from frugalrl.train.update import policy_objective, policy_update, rows_to_train


def close(actual, expected, tol=1e-6):
    torch.testing.assert_close(
        actual, torch.as_tensor(expected, dtype=actual.dtype), atol=tol, rtol=0
    )


def one_row(log_ratios, adv):
    """One completion whose tokens have these log-ratios (old_logp = 0)."""
    logp = torch.tensor([log_ratios]).requires_grad_()
    return (
        logp,
        torch.zeros_like(logp),
        torch.tensor([adv]),
        torch.ones_like(logp, dtype=torch.bool),
    )


# ---------------------------------------------------------------- by hand


def test_gspo_by_hand():
    # token ratios 1.2 and 0.9: s = sqrt(1.08) = 1.0392305; inside [0.8, 1.2]; A = 1
    # loss = -s (the sequence mean of two equal token terms), d loss / d logp_t = -s / 2
    logp, old, adv, mask = one_row([math.log(1.2), math.log(0.9)], 1.0)
    out = objective_loss("gspo", logp, old, adv, mask, eps_low=0.2, eps_high=0.2)
    s = math.sqrt(1.2 * 0.9)
    close(out.loss, -s)
    (grad,) = torch.autograd.grad(out.loss, logp)
    close(grad, [[-s / 2, -s / 2]])
    assert out.ratio_mean == pytest.approx(s) and out.clip_fraction == 0.0
    # the paper's range: s = 1.039 > 1 + 4e-4 with A > 0, so clipped: loss -(1 + 4e-4), no gradient
    out = objective_loss("gspo", logp, old, adv, mask)
    close(out.loss, -(1 + 4e-4))
    (grad,) = torch.autograd.grad(out.loss, logp)
    close(grad, [[0.0, 0.0]])
    assert out.clip_fraction == 1.0


def test_gspo_clips_the_sequence_not_the_token():
    # token ratios 2.0 and 0.5: each token is outside [0.8, 1.2], but s = 1: nothing is clipped
    logp, old, adv, mask = one_row([math.log(2.0), math.log(0.5)], -1.0)
    out = objective_loss("gspo", logp, old, adv, mask, eps_low=0.2, eps_high=0.2)
    close(out.loss, 1.0)
    (grad,) = torch.autograd.grad(out.loss, logp)
    close(grad, [[0.5, 0.5]])  # -A s / n
    ppo = objective_loss("ppo_clip", logp, old, adv, mask)
    assert ppo.clip_fraction == 0.5  # the 0.5-ratio token with A < 0


def test_cispo_by_hand():
    # ratio 2 capped at 1.5, A = 1: p = -1.5 ln 2, gradient -1.5 (the weight is detached)
    # ratio 0.5 (no lower bound), A = -1: p = -0.5 * -1 * ln 0.5, gradient +0.5
    logp = torch.tensor([[math.log(2.0)], [math.log(0.5)]]).requires_grad_()
    old, mask = torch.zeros(2, 1), torch.ones(2, 1, dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0])
    out = objective_loss("cispo", logp, old, adv, mask, aggregation="token_mean", max_weight=1.5)
    close(out.loss, (-1.5 * math.log(2.0) + 0.5 * math.log(0.5)) / 2)
    (grad,) = torch.autograd.grad(out.loss, logp)
    close(grad, [[-1.5 / 2], [0.5 / 2]])
    assert out.clip_fraction == 0.5
    # a lower bound lifts the 0.5 weight to 0.8
    out = objective_loss(
        "cispo", logp, old, adv, mask, aggregation="token_mean", max_weight=1.5, min_weight=0.8
    )
    (grad,) = torch.autograd.grad(out.loss, logp)
    close(grad, [[-1.5 / 2], [0.8 / 2]])
    assert out.clip_fraction == 1.0


def test_sapo_by_hand():
    # f(r) = sigmoid(tau (r - 1)) 4 / tau; d p / d logp = -A f'(r) r = -A 4 s (1 - s) r
    for r, adv, tau in ((1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (0.5, -1.0, 1.05)):
        logp, old, a, mask = one_row([math.log(r)], adv)
        out = objective_loss("sapo", logp, old, a, mask)
        s = 1 / (1 + math.exp(-tau * (r - 1)))
        close(out.loss, -adv * s * 4 / tau)
        (grad,) = torch.autograd.grad(out.loss, logp)
        close(grad, [[-adv * 4 * s * (1 - s) * r]])
    # at r = 1 the gate's slope is 1: the plain policy gradient, -A
    logp, old, a, mask = one_row([0.0], 0.7)
    (grad,) = torch.autograd.grad(objective_loss("sapo", logp, old, a, mask).loss, logp)
    close(grad, [[-0.7]])


@pytest.mark.parametrize("name", POLICY_LOSSES.names())
def test_every_loss_is_inert_at_advantage_zero_as_it_declares(name):
    # Off-policy ratios, A = 0: a loss that declares itself inert gives loss 0 and gradient 0.
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(3, 4, generator=g) * 2).requires_grad_()
    old = logp.detach() + torch.randn(3, 4, generator=g) * 0.5
    out = objective_loss(name, logp, old, torch.zeros(3), torch.ones(3, 4, dtype=torch.bool))
    (grad,) = torch.autograd.grad(out.loss, logp)
    assert POLICY_LOSSES.get(name).inert_at_zero_advantage
    assert float(out.loss.detach()) == 0.0 and torch.all(grad == 0)


# ---------------------------------------------------------------- what the update may skip


@pytest.fixture
def entropy_seeking_loss():
    """A loss that moves the policy even at A = 0, and says so."""

    @register_policy_loss("test_not_inert", inert_at_zero_advantage=False)
    def not_inert(logp, old_logp, advantages, mask, *, scale: float = 0.1):
        ratio = torch.exp(logp - old_logp)
        return PolicyTerm(-ratio * advantages.unsqueeze(-1) + scale * logp, ratio)

    yield "test_not_inert"
    POLICY_LOSSES._items.pop("test_not_inert")


def make_batch(advantages):
    return random_batch(advantages)


def update_with(tiny_model_dir, batch, algo, **kwargs):
    model, tokenizer = load_policy(tiny_model_dir, "float32", torch.device("cpu"))
    config = Config.model_validate({"algo": {"beta": 0.0, **algo}})
    optimizer = RecordingOptimizer(model)
    metrics = policy_update(
        model,
        None,
        optimizer,
        NoScheduler(),
        batch,
        tokenizer.pad_token_id,
        config,
        "cpu",
        **kwargs,
    )
    return metrics, torch.cat([g.flatten() for g in optimizer.grads[0]])


def test_the_update_skips_zero_advantages_only_for_a_loss_that_allows_it(
    tiny_model_dir, entropy_seeking_loss
):
    batch = make_batch([0.0, 0.0, 0.0])
    config = Config.model_validate({"algo": {"beta": 0.0, "policy_loss": entropy_seeking_loss}})
    assert rows_to_train(batch, policy_objective(config)) == [0, 1, 2]
    metrics, grad = update_with(tiny_model_dir, batch, {"policy_loss": entropy_seeking_loss})
    assert metrics["train/trained_fraction"] == 1.0 and grad.abs().sum() > 0
    metrics, grad = update_with(tiny_model_dir, batch, {"policy_loss": "gspo"})
    assert metrics["train/trained_fraction"] == 0.0 and grad.abs().sum() == 0


def test_on_policy_all_losses_have_the_policy_gradient(tiny_model_dir):
    # One pass on a batch these weights sampled: every ratio is 1, so the four losses give one
    # gradient (the docs' claim; off-policy they differ, tests/test_algo_vs_trl.py).
    adv = [1.1, -0.4, 0.0, 0.8, -1.3, 0.5]
    grads = {
        name: update_with(tiny_model_dir, make_batch(adv), {"policy_loss": name})[1]
        for name in ("ppo_clip", "gspo", "cispo", "sapo")
    }
    assert grads["ppo_clip"].abs().sum() > 0
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads["ppo_clip"], atol=1e-6, rtol=1e-5, msg=name)


def test_old_logprobs_are_computed_only_for_several_passes(tiny_model_dir, monkeypatch):
    # One pass: the training forward's detached log-probs are π_old under the weights trained,
    # whoever sampled the batch (async training corrects for that with the IS weights); several
    # passes must state π_old before the first optimizer step moves the weights.
    calls = []
    real = update.batch_logprobs

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(update, "batch_logprobs", counting)
    adv = [1.1, -0.4, 0.8]
    _, fresh = update_with(tiny_model_dir, make_batch(adv), {})
    stale = make_batch(adv)
    stale.policy_version = -2  # sampled two optimizer steps before the weights trained
    _, off_policy = update_with(tiny_model_dir, stale, {})
    assert calls == []
    torch.testing.assert_close(off_policy, fresh, atol=0, rtol=0)
    update_with(tiny_model_dir, make_batch(adv), {"num_iterations": 2})
    assert calls == [1]  # stated before the first step, with the weights being trained
    # stated old log-probs are used as given, whatever μ: here they move every ratio off 1
    stated = make_batch(adv)
    g = torch.Generator().manual_seed(3)
    stated.old_logps = {
        i: -torch.rand(c.num_tokens, generator=g) * 3 for i, c in enumerate(stated.completions)
    }
    _, given = update_with(tiny_model_dir, stated, {})
    assert calls == [1] and not torch.allclose(given, fresh, atol=1e-4)


# ---------------------------------------------------------------- parameters


def test_unknown_and_bad_parameters_are_one_line_errors():
    with pytest.raises(
        UserError, match=r"policy loss 'gspo' has no parameter 'eps'; it takes: eps_high, eps_low"
    ):
        PolicyObjective("gspo", {"eps": 0.1})
    with pytest.raises(UserError, match=r"policy loss 'sapo': tau_pos and tau_neg must be > 0"):
        PolicyObjective("sapo", {"tau_neg": 0.0})
    with pytest.raises(UserError, match=r"policy loss 'cispo': need 0 <= min_weight < max_weight"):
        PolicyObjective("cispo", {"min_weight": 6.0})
    with pytest.raises(UserError, match="unknown policy loss 'ppo'; valid choices: cispo, gspo"):
        PolicyObjective("ppo")


def test_the_config_checks_the_loss_and_its_parameters():
    c = Config.model_validate(
        {"algo": {"policy_loss": "sapo", "policy_loss_params": {"tau_pos": 2}}}
    )
    assert c.algo.loss_params == {"tau_pos": 2}
    ppo = Config.model_validate({"algo": {"epsilon_high": 0.28, "dual_clip_c": 3.0}}).algo
    assert ppo.loss_params == {"eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": 3.0}
    with pytest.raises(UserError, match="policy loss 'cispo' has no parameter 'eps_high'"):
        Config.model_validate(
            {"algo": {"policy_loss": "cispo", "policy_loss_params": {"eps_high": 5}}}
        )
    with pytest.raises(UserError, match="algo.epsilon_high is a ppo_clip parameter"):
        Config.model_validate({"algo": {"policy_loss": "gspo", "epsilon_high": 0.28}})
    # a saved config lists every field at its default: that is not a conflict
    saved = Config.model_validate({"algo": {"policy_loss": "gspo"}}).model_dump()
    assert Config.model_validate(saved).algo.loss_params == {}


def test_advantage_estimators_take_their_own_parameters():
    c = Config.model_validate({"algo": {"advantage": "dr_grpo"}}).algo
    assert c.estimator_params == {}  # dr_grpo divides by no std: advantage_eps is not its
    assert Config.model_validate({}).algo.estimator_params == {"eps": 1e-4}
    with pytest.raises(UserError, match="advantage estimator 'rloo' has no parameter 'eps'"):
        Config.model_validate({"algo": {"advantage": "rloo", "advantage_params": {"eps": 0.1}}})


@pytest.fixture
def scaled_estimator():
    """An estimator with a knob of its own: GRPO's advantage times ``scale``."""
    from frugalrl.algo import ADVANTAGES
    from frugalrl.algo.advantages import grpo

    seen = []

    @ADVANTAGES.register("test_scaled_grpo")
    def scaled(rewards, *, scale: float = 1.0, eps: float = 1e-4):
        seen.append({"scale": scale, "eps": eps})
        return scale * grpo(rewards, eps=eps)

    yield seen
    ADVANTAGES._items.pop("test_scaled_grpo")


def test_an_estimator_with_a_parameter_gets_it_from_the_recipe(tiny_overrides, scaled_estimator):
    from frugalrl.config import load_config
    from frugalrl.train import loop

    config = load_config(
        "recipes/demo.yaml",
        [
            *tiny_overrides,
            "train.steps=1",
            "eval.before=false",
            "eval.after=false",
            "scoring.workers=0",
            "algo.advantage=test_scaled_grpo",
            "algo.advantage_params={scale: 3.0}",
            "algo.advantage_eps=0.01",
        ],
    )
    loop.train(config)
    assert scaled_estimator == [{"scale": 3.0, "eps": 0.01}]
