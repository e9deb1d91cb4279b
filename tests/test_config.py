"""Recipes: round-trip, overrides, and one-line errors that name the key and the choices."""

import pytest
import yaml

from frugalrl.cli import main
from frugalrl.config import Config, apply_overrides, config_from_dict, load_config
from frugalrl.errors import UserError


def write(tmp_path, data, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_round_trip_through_yaml(tmp_path):
    config = load_config(
        "recipes/demo.yaml", ["optim.lr=1e-5", "rewards.1.schema=boxed", "algo.beta=0"]
    )
    again = load_config(write(tmp_path, yaml.safe_load(config.to_yaml())))
    assert again == config
    assert again.optim.lr == 1e-5
    assert again.rewards[1].params == {"schema": "boxed"}
    assert again.algo.beta == 0.0


def test_defaults_follow_open_rs():
    c = Config()
    assert (c.optim.lr, c.rollout.num_generations, c.rollout.temperature) == (1e-6, 6, 0.7)
    assert (c.algo.beta, c.algo.epsilon_low, c.algo.kl_estimator) == (0.04, 0.2, "k3")
    assert (c.rollout.max_completion_tokens, c.data.max_prompt_tokens) == (3584, 512)
    assert (c.optim.min_lr_ratio, c.optim.warmup_ratio, c.train.seed) == (0.1, 0.1, 42)


def test_override_parses_yaml_scalars():
    data = apply_overrides({}, ["train.steps=7", "logging.wandb=null", "model.name_or_path=a=b"])
    assert data == {
        "train": {"steps": 7},
        "logging": {"wandb": None},
        "model": {"name_or_path": "a=b"},
    }


def test_unknown_key_names_key_and_valid_keys():
    with pytest.raises(UserError) as e:
        config_from_dict({"optim": {"learning_rate": 1e-6}}, "r.yaml")
    msg = str(e.value)
    assert "unknown key 'optim.learning_rate'" in msg and "lr" in msg and "warmup_ratio" in msg


def test_unknown_section_names_valid_sections():
    with pytest.raises(UserError, match=r"unknown key 'optimizer'.*optim"):
        config_from_dict({"optimizer": {}})


def test_bad_value_names_key():
    with pytest.raises(UserError, match=r"'rollout.temperature' \(-1\)"):
        config_from_dict({"rollout": {"temperature": -1}})
    with pytest.raises(UserError, match=r"'optim.lr_scheduler'.*cosine.*constant"):
        config_from_dict({"optim": {"lr_scheduler": "linear"}})


@pytest.mark.parametrize(
    "section, key, kind",
    [
        ("algo", "advantage", "advantage estimator"),
        ("algo", "loss_aggregation", "loss aggregation"),
        ("algo", "kl_estimator", "KL estimator"),
        ("rollout", "engine", "rollout engine"),
    ],
)
def test_unknown_registry_name_lists_choices(section, key, kind):
    with pytest.raises(UserError, match=rf"unknown {kind} 'nope'; valid choices: "):
        config_from_dict({section: {key: "nope"}})


def test_unknown_reward_lists_choices():
    with pytest.raises(UserError, match=r"unknown reward 'acc'; valid choices: accuracy, .*format"):
        config_from_dict({"rewards": [{"name": "acc"}]})


def test_user_reward_by_dotted_path():
    config = config_from_dict({"rewards": [{"name": "math:sqrt"}]})
    assert config.rewards[0].name == "math:sqrt"
    with pytest.raises(UserError, match="has no function 'nope'"):
        config_from_dict({"rewards": [{"name": "math:nope"}]})


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"frugalrl: error: recipe file not found: {tmp_path / 'missing.yaml'}"
    bad = write(tmp_path, {"algo": {"advantage": "ppo"}})
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "valid choices: " in err and "Traceback" not in err
    assert main(["train", "recipes/demo.yaml", "--set", "train"]) == 2
    assert "--set expects key=value" in capsys.readouterr().err
