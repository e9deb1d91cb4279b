"""The update's savings change nothing: chunked log-probs, skipped zero-advantage completions and
token-budget micro-batches give the plain path's log-probs, loss and gradients."""

import itertools
import random

import pytest
import torch
from update_fakes import NoScheduler, RecordingOptimizer, random_batch

from frugalrl.algo.logprobs import (
    chunked_token_logprobs,
    completion_logprobs,
    pack_batch,
    supports_chunked_logprobs,
)
from frugalrl.config import Config
from frugalrl.policy import load_policy
from frugalrl.train.micro_batches import plan_micro_batches
from frugalrl.train.update import (
    RolloutBatch,
    policy_objective,
    policy_update,
    rows_to_train,
)


def assert_close(actual, expected, tol=1e-5):
    torch.testing.assert_close(actual, expected, atol=tol, rtol=0)


# ---------------------------------------------------------------- chunked log-probs


HEADS = {
    "linear": lambda: torch.nn.Linear(16, 5000, bias=False),  # the hand-written backward
    "linear with bias": lambda: torch.nn.Linear(16, 5000),
    "any module": lambda: torch.nn.Sequential(torch.nn.Linear(16, 5000)),  # checkpointing
}


@pytest.mark.parametrize("head_kind", HEADS)
@pytest.mark.parametrize("entropy_grad", [False, True])
def test_chunked_token_logprobs_equal_the_one_shot_computation(entropy_grad, head_kind):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=g, requires_grad=True)
    torch.manual_seed(0)
    head = HEADS[head_kind]()
    targets = torch.randint(0, 5000, (37,), generator=g)
    temperature = 0.7

    def loss(logp, entropy):
        return (logp * torch.linspace(-1, 1, 37)).sum() + (
            0.3 * entropy.sum() if entropy_grad else 0
        )

    z = head(hidden) / temperature
    logp_all = torch.log_softmax(z, -1)
    logp = logp_all.gather(-1, targets[:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    params = [hidden, *head.parameters()]
    grads = torch.autograd.grad(loss(logp, entropy), params)

    for chunk in (1, 5, 37, 1000):
        c_logp, c_entropy = chunked_token_logprobs(
            hidden, targets, head, temperature, chunk, with_entropy=True, entropy_grad=entropy_grad
        )
        assert c_entropy.requires_grad == entropy_grad
        assert_close(c_logp, logp)
        assert_close(c_entropy, entropy)
        c_grads = torch.autograd.grad(loss(c_logp, c_entropy), params)
        for a, b in zip(c_grads, grads, strict=True):
            assert_close(a, b)


def test_chunked_logprobs_hold_one_chunk_of_logits_for_backward():
    # What autograd keeps for backward: the plain path keeps the (N, vocab) log-softmax; the
    # chunked path keeps only its inputs (hidden states, targets), recomputing logits per chunk.
    hidden = torch.randn(64, 8, requires_grad=True)
    head = torch.nn.Linear(8, 4096, bias=False)
    targets = torch.randint(0, 4096, (64,))
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        chunked_token_logprobs(hidden, targets, head, 1.0, 16)
    chunked_peak = max(saved)
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.log_softmax(head(hidden), -1).gather(-1, targets[:, None])
    assert max(saved) == 64 * 4096
    assert chunked_peak < 64 * 4096 / 4


def policy(tiny_model_dir):
    model, tokenizer = load_policy(tiny_model_dir, "float32", torch.device("cpu"))
    return model, tokenizer


def test_completion_logprobs_chunked_equal_plain_on_a_real_model(tiny_model_dir):
    model, tokenizer = policy(tiny_model_dir)
    assert supports_chunked_logprobs(model)
    packed = pack_batch([[5, 6, 7], [8, 9], [4]], [[10, 11, 12, 13], [14], [15, 16]], 0)
    mask = packed["completion_mask"]
    results = []
    for chunk in (None, 1, 3, 64):
        model.zero_grad()
        logp, entropy = completion_logprobs(
            model, packed, 0.7, entropy_grad=True, chunk_tokens=chunk
        )
        (torch.where(mask, logp + 0.1 * entropy, 0.0).sum()).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((torch.where(mask, logp, 0.0), torch.where(mask, entropy, 0.0), grads))
    (logp, entropy, grads), *chunked = results
    for c_logp, c_entropy, c_grads in chunked:
        assert_close(c_logp.detach(), logp.detach())
        assert_close(c_entropy.detach(), entropy.detach())
        for a, b in zip(c_grads, grads, strict=True):
            assert_close(a, b)


def test_a_soft_capped_model_keeps_the_plain_path(tiny_model_dir):
    model, _ = policy(tiny_model_dir)
    real_forward = model.forward

    def soft_capped(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        out.logits = 0.5 * torch.tanh(out.logits / 0.5)  # logits here are O(1)
        return out

    model.forward = soft_capped
    assert not supports_chunked_logprobs(model)


# ---------------------------------------------------------------- micro-batch plans


def test_plan_micro_batches_by_hand():
    prompts = [2, 2, 2, 2, 2]
    completions = [10, 3, 8, 1, 4]  # totals 12, 5, 10, 3, 6
    rows = [0, 1, 2, 3, 4]
    assert plan_micro_batches(prompts, completions, rows, 2) == [[0, 1], [2, 3], [4]]
    # longest first: 0 (12), 2 (10), 4 (6), 1 (5), 3 (3); budget 24 tokens of padded rows:
    # [0, 2] = 2 x 12 = 24; [4, 1, 3] = 3 x 6 = 18
    assert plan_micro_batches(prompts, completions, rows, 8, 24) == [[0, 2], [4, 1, 3]]
    assert plan_micro_batches(prompts, completions, rows, 2, 24) == [[0, 2], [4, 1], [3]]
    # a row over the budget goes alone
    assert plan_micro_batches(prompts, completions, rows, 8, 7) == [[0], [2], [4], [1], [3]]
    assert plan_micro_batches(prompts, completions, [3, 1], 8, 24) == [[1, 3]]


def test_plan_micro_batches_covers_every_row_within_budget():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 30)
        prompts = [rng.randint(1, 20) for _ in range(n)]
        completions = [rng.randint(0, 50) for _ in range(n)]
        rows = rng.sample(range(n), rng.randint(1, n))
        max_rows, budget = rng.randint(1, 8), rng.randint(1, 300)
        plan = plan_micro_batches(prompts, completions, rows, max_rows, budget)
        assert sorted(i for mb in plan for i in mb) == sorted(rows)
        for mb in plan:
            padded = len(mb) * (max(prompts[i] for i in mb) + max(completions[i] for i in mb))
            assert len(mb) <= max_rows and (len(mb) == 1 or padded <= budget)


# ---------------------------------------------------------------- the update


def make_batch(advantages, in_loss=None) -> RolloutBatch:
    return random_batch(advantages, in_loss)


def run_update(tiny_model_dir, batch, **settings):
    model, tokenizer = policy(tiny_model_dir)
    algo = {"beta": 0.0, "num_iterations": settings.pop("num_iterations", 1)}
    algo_keys = ("loss_aggregation", "beta", "entropy_coef")
    algo.update({k: settings.pop(k) for k in algo_keys if k in settings})
    config = Config.model_validate(
        {"algo": algo, "train": settings, "rollout": {"max_completion_tokens": 9}}
    )
    if batch.old_logps is None and algo["num_iterations"] > 1:
        # Old log-probs that differ from the current ones, so the ratio is not 1 everywhere.
        g = torch.Generator().manual_seed(3)
        batch.old_logps = {
            i: -torch.rand(c.num_tokens, generator=g) * 3 for i, c in enumerate(batch.completions)
        }
    ref = None
    if config.algo.beta > 0:
        ref = policy(tiny_model_dir)[0]
        with torch.no_grad():
            for p in ref.parameters():
                p.add_(0.05 * torch.randn_like(p))
    optimizer = RecordingOptimizer(model)
    metrics = policy_update(
        model, ref, optimizer, NoScheduler(), batch, tokenizer.pad_token_id, config, "cpu"
    )
    return metrics, optimizer.grads


ADVANTAGES = [0.0, 1.2, 0.0, -0.7, 0.0, 0.0, 0.4, -0.9, 0.0, 0.0]
IN_LOSS = [True, True, True, True, False, True, True, False, True, True]


@pytest.mark.parametrize(
    ("aggregation", "num_iterations"),
    [("seq_mean_token_mean", 1), ("token_mean", 2), ("seq_mean_token_sum_norm", 1)],
)
def test_skipping_and_token_budgets_leave_loss_and_gradients_unchanged(
    tiny_model_dir, aggregation, num_iterations
):
    base = {
        "loss_aggregation": aggregation,
        "num_iterations": num_iterations,
        "micro_batch_size": 3,
    }
    plain = {
        "skip_zero_advantage": False,
        "micro_batch_tokens": None,
        "logprob_chunk_tokens": None,
        "packing": False,
    }
    reference, ref_grads = run_update(
        tiny_model_dir, make_batch(ADVANTAGES, IN_LOSS), **base, **plain
    )
    assert reference["train/trained_fraction"] == 0.8  # only the 2 rows outside the loss
    for skip, budget, chunk, packing in itertools.product(
        [True, False], [None, 20, 1000], [None, 4], [True, False]
    ):
        settings = {"skip_zero_advantage": skip, "micro_batch_tokens": budget, "packing": packing}
        metrics, grads = run_update(
            tiny_model_dir,
            make_batch(ADVANTAGES, IN_LOSS),
            **base,
            **settings,
            logprob_chunk_tokens=chunk,
        )
        assert metrics["train/trained_fraction"] == (0.3 if skip else 0.8)
        assert metrics["train/loss"] == pytest.approx(reference["train/loss"], abs=1e-6)
        assert len(grads) == num_iterations
        for step, ref_step in zip(grads, ref_grads, strict=True):
            for a, b in zip(step, ref_step, strict=True):
                assert_close(a, b, 1e-6)
    assert any(float(g.abs().sum()) > 0 for g in ref_grads[0])


def test_zero_advantages_are_kept_when_the_kl_is_in_the_loss(tiny_model_dir):
    batch = make_batch(ADVANTAGES)
    config = Config.model_validate({"algo": {"beta": 0.04}})
    assert rows_to_train(batch, policy_objective(config)) == list(range(len(ADVANTAGES)))
    config = Config.model_validate({"algo": {"beta": 0.0}})
    assert rows_to_train(batch, policy_objective(config)) == [1, 3, 6, 7]


def test_a_batch_with_nothing_to_train_steps_on_a_zero_gradient(tiny_model_dir):
    metrics, grads = run_update(tiny_model_dir, make_batch([0.0] * 4))
    assert metrics["train/trained_fraction"] == 0.0 and metrics["train/loss"] == 0.0
    ((*step,),) = grads
    assert step and all(float(g.abs().sum()) == 0.0 for g in step)


def test_entropy_bonus_moves_the_policy_even_at_zero_advantage(tiny_model_dir):
    # Zero advantages: without the bonus nothing trains (gradient exactly 0); with it the
    # completions are kept and the bonus's gradient reaches the weights.
    without, (grads_without,) = run_update(tiny_model_dir, make_batch([0.0] * 4))
    with_bonus, (grads_with,) = run_update(tiny_model_dir, make_batch([0.0] * 4), entropy_coef=0.01)
    assert without["train/trained_fraction"] == 0.0 and with_bonus["train/trained_fraction"] == 1.0
    assert all(float(g.abs().sum()) == 0.0 for g in grads_without)
    assert sum(float(g.abs().sum()) for g in grads_with) > 0
