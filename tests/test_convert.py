"""`frugalrl convert`: open-r1 / open-rs GRPO configs as frugalrl recipes, with a report.

The configs here are written for these tests in open-rs's recipes/grpo.yaml layout (a flat YAML
of TRL GRPOConfig fields plus open-r1's model and script arguments); every expected value is
computed by hand from them.
"""

import inspect
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from frugalrl.cli import main
from frugalrl.config import Config, load_config
from frugalrl.convert import KINDS, REWARDS, SIMPLE, convert_file
from frugalrl.errors import UserError
from frugalrl.rewards import REWARDS as FRUGALRL_REWARDS
from frugalrl.rewards.cosine import cosine_interp

# Accuracy + format, as open-rs experiments 1 and 2 (own values), run on 2 training processes.
ACCURACY_FORMAT = """\
# Model arguments
model_name_or_path: Qwen/Qwen2.5-Math-1.5B
model_revision: main
torch_dtype: bfloat16
attn_implementation: sdpa

# Data training arguments
dataset_name: my-org/math-mix
dataset_config: hard
system_prompt: "Reason inside <think> </think>, then put the answer in \\\\boxed{}."

# GRPO trainer config
bf16: true
use_vllm: true
vllm_device: auto
vllm_gpu_memory_utilization: 0.6
gradient_accumulation_steps: 8
gradient_checkpointing: true
hub_model_id: Math-GRPO
learning_rate: 2.0e-06
lr_scheduler_type: cosine
logging_steps: 5
max_prompt_length: 384
max_completion_length: 2048
max_steps: 300
num_generations: "eight"
output_dir: data/Math-GRPO
per_device_train_batch_size: 4
push_to_hub: false
report_to:
- wandb
- tensorboard
reward_funcs:
- accuracy
- format
reward_weights:
- 2.0
- 0.5
save_strategy: steps
save_steps: 25
seed: 7
temperature: 0.8
warmup_ratio: 0.05
learning_rte: 3.0e-06
"""

# Cosine + format, as open-rs experiment 3: format 1.0, cosine 2.0, Lmax 3584; 3 processes.
COSINE_FORMAT = """\
# Model arguments
model_name_or_path: deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B
torch_dtype: bfloat16

# Data training arguments
dataset_name: my-org/rs-mix
system_prompt: "Think first, then answer."

# GRPO trainer config
bf16: true
use_vllm: true
vllm_device: auto
vllm_enforce_eager: true
vllm_max_model_len: 4096
gradient_accumulation_steps: 4
gradient_checkpointing: true
learning_rate: 3.0e-06
lr_scheduler_type: cosine_with_min_lr
lr_scheduler_kwargs:
  min_lr_rate: 0.2
max_prompt_length: 512
max_completion_length: 3584
max_steps: 200
num_iterations: 2
num_generations: 6
per_device_train_batch_size: 6
beta: 0.01
epsilon_high: 0.28
reward_funcs:
- format
- cosine
reward_weights:
- 1.0
- 2.0
cosine_min_value_wrong: -0.8
cosine_max_value_wrong: -0.3
cosine_min_value_correct: 0.4
cosine_max_value_correct: 0.9
cosine_max_len: 3584
cosine_min_len: 100
repetition_n_grams: 4
save_strategy: "steps"
save_steps: 40
seed: 1234
temperature: 0.7
warmup_ratio: 0.1
"""

# LoRA, a vLLM server, bf16 and open-r1's rewards; open-r1's defaults, 4 processes.
LORA_SERVER = """\
# Model arguments
model_name_or_path: Qwen/Qwen2.5-1.5B-Instruct
torch_dtype: bfloat16
use_peft: true
lora_r: 32
lora_alpha: 64
lora_dropout: 0.0
lora_target_modules: [q_proj, k_proj, v_proj, o_proj]
lora_rank: 8

# Data training arguments
dataset_name: my-org/word-problems
dataset_prompt_column: question

# GRPO trainer config
bf16: true
use_vllm: true
vllm_mode: server
vllm_server_host: 0.0.0.0
vllm_server_port: 8123
vllm_server_timeout: 900
vllm_gpu_memory_utilization: 0.85
learning_rate: fast
per_device_train_batch_size: 8
gradient_accumulation_steps: 2
num_generations: 16
max_completion_length: 1024
loss_type: dr_grpo
scale_rewards: false
mask_truncated_completions: true
lr_scheduler_type: constant_with_warmup
warmup_ratio: 0.03
max_steps: -1
num_train_epochs: 2
reward_funcs: [accuracy, format, tag_count, repetition_penalty, soft_overlong_punishment]
reward_weights: [1.0, 0.5, 0.5, 1.0, 1.0]
repetition_n_grams: 4
repetition_max_penalty: -0.5
max_completion_len: 1024
soft_punish_cache: 256
save_strategy: "no"
push_to_hub: true
hub_model_id: qwen-lora-grpo
report_to: none
"""


def convert_text(tmp_path: Path, text: str, name: str, **kwargs):
    """Convert ``text`` (saved as NAME.yaml), write the recipe, and load it as frugalrl does."""
    src = tmp_path / f"{name}.yaml"
    src.write_text(text)
    recipe, report = convert_file(src, **kwargs)
    out = tmp_path / f"{name}-frugalrl.yaml"
    out.write_text(recipe)
    return load_config(out), [line.strip() for line in report]


def test_accuracy_format_run(tmp_path):
    config, report = convert_text(tmp_path, ACCURACY_FORMAT, "acc", num_processes=2)
    # 4 completions per device x 8 accumulation x 2 processes = 64 completions = 8 prompts x 8;
    # num_generations "eight" is not an integer, so TRL's default 8 is used.
    assert config.train.prompts_per_step == 64 // 8 == 8
    assert config.rollout.num_generations == 8
    assert config.train.micro_batch_size == 4
    assert config.name == "Math-GRPO"
    assert config.train.output_dir == "data/Math-GRPO"
    assert config.train.steps == 300
    assert config.train.save_every == 25
    assert config.train.seed == 7
    assert config.train.precision == "bf16"
    assert config.model.dtype == "auto"
    assert config.model.name_or_path == "Qwen/Qwen2.5-Math-1.5B"
    assert config.model.attn_implementation == "sdpa"
    assert config.model.gradient_checkpointing is True
    assert config.optim.lr == 2e-6
    assert (config.optim.lr_scheduler, config.optim.min_lr_ratio) == ("cosine", 0.0)
    assert config.optim.warmup_ratio == 0.05
    assert config.optim.betas == (0.9, 0.999)  # transformers' AdamW defaults
    assert config.rollout.temperature == 0.8
    assert config.rollout.max_completion_tokens == 2048
    assert config.data.max_prompt_tokens == 384
    assert config.data.path == "my-org/math-mix"
    assert (config.data.problem_field, config.data.answer_field) == ("problem", "solution")
    assert config.data.prompt_template == "plain"
    assert (
        config.data.system_prompt
        == "Reason inside <think> </think>, then put the answer in \\boxed{}."
    )
    assert config.rollout.engine == "vllm-server"
    assert config.rollout.engine_options == {"server_options": {"gpu_memory_utilization": 0.6}}
    assert [(r.name, r.weight, r.params) for r in config.rewards] == [
        ("accuracy", 2.0, {}),
        ("format", 0.5, {"schema": "open-rs"}),
    ]
    # TRL 69ad852's defaults for what the file does not set
    assert (config.algo.beta, config.algo.epsilon_low, config.algo.epsilon_high) == (0.04, 0.2, 0.2)
    assert (config.algo.loss_aggregation, config.algo.advantage) == ("token_mean", "grpo")
    assert (config.logging.wandb, config.logging.tensorboard) == (True, True)

    assert (
        "per_device_train_batch_size 4 x gradient_accumulation_steps 8 x 2 processes "
        "(--num-processes) = 64 completions per optimizer step; / num_generations 8 (default) "
        "-> train.prompts_per_step 8"
    ) in report
    assert "learning_rate 2.0e-06 -> optim.lr 2.0e-06" in report
    assert (
        "reward_funcs[0] accuracy, reward_weights[0] 2.0 -> rewards: accuracy weight 2.0" in report
    )
    assert "beta 0.04 (default) -> algo.beta 0.04" in report
    assert "learning_rte: unknown field: not an open-r1 / TRL GRPO option; not mapped" in report
    assert "num_generations: 'eight' is not an integer; not mapped (default used)" in report
    assert (
        "dataset_config: no equivalent: export that configuration to JSONL for data.path" in report
    )
    assert any(line.startswith("hub_model_id: hub-only") for line in report)
    assert any(line.startswith("model_revision: hub-only") for line in report)
    assert any(
        line.startswith("accuracy: a gold answer math-verify cannot parse") for line in report
    )


def open_r1_cosine(length: float, correct: bool, v: dict) -> float:
    """open-r1 / open-rs's cosine_scaled_reward for a completion of ``length`` characters."""
    lo, hi = (
        (v["cosine_min_value_correct"], v["cosine_max_value_correct"])
        if correct
        else (v["cosine_max_value_wrong"], v["cosine_min_value_wrong"])
    )
    return lo + 0.5 * (hi - lo) * (1.0 + math.cos(length / v["cosine_max_len"] * math.pi))


def test_cosine_format_run_like_open_rs_experiment_3(tmp_path):
    config, report = convert_text(tmp_path, COSINE_FORMAT, "exp3", num_processes=3)
    # 6 x 4 accumulation x 3 processes = 72 completions = 12 prompts x 6 (open-rs's batch)
    assert config.train.prompts_per_step == 72 // 6 == 12
    assert config.rollout.num_generations == 6
    # max_steps counts optimizer steps; 2 passes per batch: 200 / 2 = 100 batches, saves 40 / 2
    assert (config.train.steps, config.algo.num_iterations) == (100, 2)
    assert config.train.save_every == 20
    assert (config.optim.lr, config.optim.min_lr_ratio, config.optim.warmup_ratio) == (
        3e-6,
        0.2,
        0.1,
    )
    assert (config.algo.beta, config.algo.epsilon_low, config.algo.epsilon_high) == (
        0.01,
        0.2,
        0.28,
    )
    assert config.algo.loss_aggregation == "token_mean"  # TRL 69ad852's loss (bnpo)
    assert config.rollout.engine == "vllm-server"
    assert config.rollout.engine_options["server_options"] == {
        "enforce_eager": True,
        "max_model_len": 4096,
    }
    rewards = {r.name: r for r in config.rewards}
    assert list(rewards) == ["format", "cosine"]
    assert (rewards["format"].weight, rewards["format"].params) == (1.0, {"schema": "open-rs"})
    assert rewards["cosine"].weight == 2.0
    assert rewards["cosine"].params == {
        "max_len": 3584,
        "correct_at_zero": 0.9,
        "correct_at_max": 0.4,
        "wrong_at_zero": -0.8,
        "wrong_at_max": -0.3,
    }
    # Same curve as open-r1's where L is the same number (tokens here, characters there).
    v = {
        "cosine_min_value_wrong": -0.8,
        "cosine_max_value_wrong": -0.3,
        "cosine_min_value_correct": 0.4,
        "cosine_max_value_correct": 0.9,
        "cosine_max_len": 3584,
    }
    p = rewards["cosine"].params
    for length in (0, 500, 1792, 3584):
        assert cosine_interp(length, 3584, p["correct_at_zero"], p["correct_at_max"]) == (
            pytest.approx(open_r1_cosine(length, True, v))
        )
        assert cosine_interp(length, 3584, p["wrong_at_zero"], p["wrong_at_max"]) == (
            pytest.approx(open_r1_cosine(length, False, v))
        )

    assert "cosine_max_len 3584 -> rewards.cosine.max_len 3584" in report
    assert "cosine_min_value_wrong -0.8 -> rewards.cosine.wrong_at_zero -0.8" in report
    assert "reward_funcs[1] cosine, reward_weights[1] 2.0 -> rewards: cosine weight 2.0" in report
    assert "max_steps 200 / num_iterations 2 -> train.steps 100" in report
    assert "lr_scheduler_kwargs {min_lr_rate: 0.2} -> optim.min_lr_ratio 0.2" in report
    assert "cosine_min_len: unknown field: not an open-r1 / TRL GRPO option; not mapped" in report
    assert "repetition_n_grams: irrelevant: its reward is not in reward_funcs" in report
    assert any(line.startswith("cosine: L is counted in tokens, not characters") for line in report)
    assert any(line.startswith("format: schema open-rs") for line in report)
    assert any(line.startswith("loss_type bnpo -> token_mean") for line in report)


def test_lora_vllm_server_bf16_run_from_open_r1(tmp_path):
    config, report = convert_text(
        tmp_path, LORA_SERVER, "lora-server", source="open-r1", num_processes=4
    )
    # 8 x 2 accumulation x 4 processes = 64 completions = 4 prompts x 16
    assert config.train.prompts_per_step == 64 // 16 == 4
    assert config.train.micro_batch_size == 8
    assert config.name == "lora-server"  # no output_dir: the file's name
    assert config.peft is not None
    assert (config.peft.r, config.peft.alpha, config.peft.dropout) == (32, 64.0, 0.0)
    assert config.peft.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (config.train.precision, config.model.dtype) == ("bf16", "auto")
    assert config.rollout.engine == "vllm-server"
    assert config.rollout.engine_options == {
        "server_options": {"gpu_memory_utilization": 0.85},
        "url": "http://127.0.0.1:8123",
        "startup_seconds": 900,
    }
    assert config.optim.lr == 1e-6  # "fast" is not a number: TRL's default
    assert (config.optim.lr_scheduler, config.optim.warmup_ratio) == ("constant", 0.03)
    assert config.rollout.temperature == 1.0  # TRL 0.18.0's default
    assert config.data.problem_field == "question"
    assert (config.algo.loss_aggregation, config.algo.advantage) == (
        "seq_mean_token_sum_norm",
        "dr_grpo",
    )
    assert config.algo.mask_truncated is True
    assert config.train.save_every == 0
    assert config.train.steps == 500  # epochs are not steps: frugalrl's default, reported
    assert (config.logging.wandb, config.logging.tensorboard) == (False, False)
    assert [(r.name, r.weight, r.params) for r in config.rewards] == [
        ("accuracy", 1.0, {}),
        ("format", 0.5, {"schema": "open-r1"}),
        ("repetition", 1.0, {"ngram_size": 4, "max_penalty": -0.5}),
        ("overlong", 1.0, {"max_len": 1024, "cache_len": 256}),
    ]

    assert (
        "per_device_train_batch_size 8 x gradient_accumulation_steps 2 x 4 processes "
        "(--num-processes) = 64 completions per optimizer step; / num_generations 16 "
        "-> train.prompts_per_step 4"
    ) in report
    assert "use_vllm true, vllm_mode 'server' -> rollout.engine vllm-server" in report
    assert "bf16 true -> train.precision bf16" in report
    assert "lora_r 32 -> peft.r 32" in report
    assert "temperature 1.0 (default) -> rollout.temperature 1.0" in report
    assert "learning_rate: 'fast' is not a number; not mapped (default used)" in report
    assert "lora_rank: unknown field: not an open-r1 / TRL GRPO option; not mapped" in report
    assert (
        "reward_funcs[2] tag_count: no frugalrl equivalent (partial credit per think tag); "
        "format checks the layout; dropped (reward_weights[2] 0.5)"
    ) in report
    assert any(
        line.startswith("num_train_epochs: not mapped (num_train_epochs 2)") for line in report
    )
    assert any(line.startswith("push_to_hub: hub-only") for line in report)
    assert any(line.startswith("format: schema open-r1") for line in report)


@pytest.mark.parametrize(
    ("text", "processes"), [(ACCURACY_FORMAT, 2), (COSINE_FORMAT, 3), (LORA_SERVER, 4)]
)
def test_every_field_of_the_file_has_a_report_line(tmp_path, text, processes):
    _, report = convert_text(tmp_path, text, "fields", num_processes=processes)
    for key in yaml.safe_load(text):
        assert any(re.search(rf"(?<!\w){key}(?!\w)", line) for line in report), key


def test_a_value_frugalrl_rejects_is_reported_and_the_recipe_still_loads(tmp_path):
    text = "temperature: 0\nbeta: 0.0\nloss_type: sapo\nsapo_temperature_pos: 0.0\n"
    config, report = convert_text(tmp_path, text, "cold")
    assert config.rollout.temperature == 0.7  # frugalrl's default
    assert config.algo.beta == 0.0
    assert (config.algo.policy_loss, config.algo.policy_loss_params) == ("sapo", {})
    assert any(
        line.startswith("sapo_temperature_pos: algo.policy_loss_params.tau_pos rejected:")
        for line in report
    )
    assert (
        "temperature: rollout.temperature 0 rejected: Input should be greater than 0; default used"
        in report
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rate: [1e-6\n", r"not valid YAML"),
        ("- learning_rate\n- beta\n", r"must be a mapping"),
        ("", r"empty, nothing to convert"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, capsys, text, message):
    src = tmp_path / "bad.yaml"
    src.write_text(text)
    with pytest.raises(UserError, match=message):
        convert_file(src)
    assert main(["convert", str(src)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("frugalrl: error:") and len(err.strip().splitlines()) == 1


def test_tables_name_only_options_and_rewards_that_exist():
    for source, target in SIMPLE.items():
        assert source in KINDS
        section, option = target.split(".")
        assert option in Config.model_fields[section].annotation.model_fields, target
    for name, params in REWARDS.values():
        signature = inspect.signature(FRUGALRL_REWARDS.get(name))
        assert set(params) <= set(signature.parameters), name


def test_cli_writes_a_recipe_that_loads(tmp_path):
    src = tmp_path / "grpo.yaml"
    src.write_text(COSINE_FORMAT)
    out = tmp_path / "converted.yaml"
    cmd = [
        sys.executable,
        "-m",
        "frugalrl",
        "convert",
        str(src),
        "-o",
        str(out),
        "--num-processes",
        "3",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "train.prompts_per_step 12" in done.stderr
    assert done.stderr.rstrip().endswith(f"recipe: {out}")
    assert out.read_text().startswith("# Converted by `frugalrl convert` from grpo.yaml")
    config = load_config(out)
    assert (config.train.prompts_per_step, config.rewards[1].name) == (12, "cosine")
