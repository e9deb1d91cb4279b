"""Every shipped recipe loads, holds the papers' settings, and trains on the tiny model."""

from importlib.resources import files

import pytest

from frugalrl.config import Config, load_config
from frugalrl.train import loop
from frugalrl.train.metrics import read_metrics

# Training recipes; curate-*.yaml are `frugalrl curate` configs (tests/test_curate*.py).
RECIPES = sorted(
    p.name
    for p in files("frugalrl").joinpath("recipes").iterdir()
    if p.name.endswith(".yaml") and not p.name.startswith("curate-")
)
PAPER_RECIPES = [
    "open-rs-exp1.yaml",
    "open-rs-exp2.yaml",
    "open-rs-exp3.yaml",
    "efficient-alpha-0.1.yaml",
    "efficient-alpha-0.2.yaml",
    "dr-grpo.yaml",
    "dapo.yaml",
]


def recipe_path(name: str):
    return files("frugalrl").joinpath("recipes", name)


def load(name: str, overrides: list[str] | None = None) -> Config:
    return load_config(str(recipe_path(name)), overrides)


def test_the_paper_recipes_are_shipped():
    assert set(PAPER_RECIPES) <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_loads_and_says_where_it_comes_from(name):
    config = load(name)
    assert config.name == name.removesuffix(".yaml")
    head = recipe_path(name).read_text().splitlines()[0]
    assert head.startswith("# "), "a recipe begins with a comment naming its source"


def test_open_rs_recipes_follow_the_paper():
    for n in (1, 2, 3):
        c = load(f"open-rs-exp{n}.yaml")
        assert c.model.name_or_path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
        assert (c.optim.lr, c.optim.lr_scheduler, c.optim.min_lr_ratio) == (1e-6, "cosine", 0.1)
        assert c.optim.warmup_ratio == 0.1 and c.train.steps == 500
        assert (c.rollout.num_generations, c.rollout.temperature) == (6, 0.7)
        assert (c.algo.beta, c.algo.kl_estimator, c.algo.epsilon_low) == (0.04, "k3", 0.2)
        assert c.data.prompt_template == "open-rs" and c.data.max_prompt_tokens == 512
        assert c.train.prompts_per_step * c.rollout.num_generations == 72
        assert c.rollout.max_completion_tokens == (4096 if n == 1 else 3584)
    exp3 = {r.name: r for r in load("open-rs-exp3.yaml").rewards}
    assert (exp3["cosine"].weight, exp3["format"].weight) == (2.0, 1.0)
    assert exp3["cosine"].params["wrong_at_zero"] == 0.0  # what open-rs ran, not the intent
    assert exp3["cosine"].params["wrong_at_max"] == -0.5
    assert exp3["cosine"].params["max_len"] == 3584


@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_efficiency_recipes_follow_the_paper(alpha):
    c = load(f"efficient-alpha-{alpha}.yaml")
    assert c.rewards[0].name == "efficiency" and c.rewards[0].params["alpha"] == alpha
    assert c.algo.advantage == "rloo_batch_whiten"
    assert (c.algo.kl_in_reward, c.algo.beta, c.algo.kl_estimator) == (True, 0.001, "k1")
    assert (c.optim.lr, c.optim.lr_scheduler) == (5e-6, "constant")
    assert (c.rollout.num_generations, c.train.prompts_per_step) == (8, 32)
    assert (c.rollout.temperature, c.algo.num_iterations, c.train.steps) == (1.0, 2, 100)
    assert c.data.prompt_template == "arora-zanette"


def test_variant_recipes():
    dr = load("dr-grpo.yaml").algo
    assert (dr.advantage, dr.loss_aggregation) == ("dr_grpo", "seq_mean_token_sum_norm")
    dapo = load("dapo.yaml")
    a = dapo.algo
    assert (a.epsilon_low, a.epsilon_high, a.beta) == (0.2, 0.28, 0.0)
    assert a.loss_aggregation == "token_mean" and a.dynamic_sampling
    overlong = next(r for r in dapo.rewards if r.name == "overlong")
    assert overlong.params["max_len"] == dapo.rollout.max_completion_tokens
    gspo = load("gspo.yaml").algo
    assert (gspo.policy_loss, gspo.loss_params) == ("gspo", {"eps_low": 3e-4, "eps_high": 4e-4})
    assert (gspo.loss_aggregation, gspo.beta, gspo.num_iterations) == ("seq_mean_token_mean", 0, 2)
    cispo = load("cispo.yaml").algo
    assert (cispo.policy_loss, cispo.loss_params) == ("cispo", {"max_weight": 5.0})
    assert (cispo.loss_aggregation, cispo.beta, cispo.num_iterations) == ("token_mean", 0, 2)


# Shrunk to the tiny model and the demo task: what is left is each recipe's algorithm.
def run_overrides(tiny_overrides: list[str]) -> list[str]:
    return [
        *tiny_overrides,
        "train.steps=2",
        "train.save_every=0",
        "model.dtype=float32",
        "rollout.batch_size=64",
        "scoring.workers=0",
        "eval.before=false",
        "eval.after=false",
        "eval.benchmarks=[]",
    ]


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_two_steps_on_the_tiny_model(name, tiny_overrides):
    overrides = run_overrides(tiny_overrides)
    # The overlong penalty scaled to the 12-token cap, so that DAPO's groups differ and train.
    for i, reward in enumerate(load(name).rewards):
        if reward.name == "overlong":
            overrides += [f"rewards.{i}.max_len=12", f"rewards.{i}.cache_len=8"]
    config = load(name, overrides)
    summary = loop.train(config)
    assert summary["steps"] == 2
    rows = read_metrics(config.run_dir / "metrics.jsonl")
    # step 0: the starting policy's held-out evaluation, in recipes with periodic evaluation
    assert [r["step"] for r in rows] == ([0, 1, 2] if config.eval.every_steps else [1, 2])
    rows = [r for r in rows if r["step"] > 0]
    assert all(r["reward/total/mean"] is not None for r in rows)
    if config.algo.kl_in_reward:
        assert all("train/kl_in_reward" in r for r in rows)
    if config.algo.dynamic_sampling:
        assert all("train/dynamic_sampling_rounds" in r for r in rows)
        assert any(r["train/dynamic_sampling_kept_groups"] > 0 for r in rows)
    assert (config.run_dir / "final" / "config.json").is_file()
