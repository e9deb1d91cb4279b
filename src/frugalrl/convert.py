"""An open-r1 / open-rs GRPO config as a frugalrl recipe, with a report of what mapped and how.

open-r1's GRPO configs (and open-rs's ``recipes/grpo.yaml``, an open-r1 fork in the same format)
are flat YAML: TRL ``GRPOConfig`` fields, transformers ``TrainingArguments`` fields, TRL
``ModelConfig`` fields and open-r1's script arguments (rewards, dataset). Each field is mapped by
a table (one-to-one fields) or by a handler for the fields that combine (the batch, the steps,
the loss, the rewards, ...). A field that is not set takes the value the source runs with: the
defaults of the TRL version the source pins and of its own scripts, marked "(default)" in the
report. Fields without an equivalent, of the wrong type or unknown are reported one line each.
docs/convert.md has the field table and the deviations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from frugalrl.config import Config, format_validation_error, read_yaml_mapping
from frugalrl.errors import UserError


def _fields(names: str) -> list[str]:
    """Field names written as one space-separated string (keeps the tables short)."""
    return names.split()


@dataclass(frozen=True)
class Source:
    """A codebase whose configs are converted: the defaults its runs get for unset fields."""

    name: str
    pins: str  # the TRL version its setup.py pins, whose defaults apply
    defaults: dict[str, Any]
    format_schema: str  # what its `format` reward checks (frugalrl's format schemas)
    vllm_layout: str  # what use_vllm means when vllm_mode is not set


# transformers TrainingArguments, TRL GRPOConfig / ModelConfig and open-r1's script arguments,
# the same in both pins (TRL 69ad852 ~ 0.16.0.dev for open-rs, TRL 0.18.0 for open-r1).
_COMMON_DEFAULTS: dict[str, Any] = {
    "num_generations": 8,
    "top_p": 1.0,
    "max_prompt_length": 512,
    "max_completion_length": 256,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "max_steps": -1,
    "num_train_epochs": 3.0,
    "save_strategy": "steps",
    "save_steps": 500,
    "learning_rate": 1e-6,
    "lr_scheduler_type": "linear",
    "warmup_ratio": 0.0,
    "weight_decay": 0.0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "max_grad_norm": 1.0,
    "beta": 0.04,
    "epsilon": 0.2,
    "num_iterations": 1,
    "loss_type": "bnpo",  # TRL 69ad852 has no loss_type: its one loss is what 0.18 calls bnpo
    "scale_rewards": True,
    "mask_truncated_completions": False,
    "seed": 42,
    "bf16": False,
    "gradient_checkpointing": False,
    "use_vllm": False,
    "use_peft": False,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "dataset_train_split": "train",
    "reward_funcs": ["accuracy", "format", "tag_count"],
    "cosine_min_value_wrong": 0.0,
    "cosine_max_value_wrong": -0.5,
    "cosine_min_value_correct": 0.5,
    "cosine_max_value_correct": 1.0,
    "cosine_max_len": 1000,
    "repetition_n_grams": 3,
    "repetition_max_penalty": -1.0,
    "max_completion_len": 16384,
    "soft_punish_cache": 4096,
}

SOURCES = {
    "open-rs": Source(
        "open-rs",
        "TRL 69ad852",
        {**_COMMON_DEFAULTS, "temperature": 0.9, "dataset_prompt_column": "problem"},
        format_schema="open-rs",
        vllm_layout="vllm_device",  # vLLM on a GPU of its own, driven by the main process
    ),
    "open-r1": Source(
        "open-r1",
        "TRL 0.18.0",
        {**_COMMON_DEFAULTS, "temperature": 1.0, "dataset_prompt_column": "prompt"},
        format_schema="open-r1",
        vllm_layout="server",
    ),
}

# What each field read here must hold; YAML reads 1e-6 (no dot) as a string, so "float"
# takes numeric strings too.
KINDS: dict[str, str] = {
    **dict.fromkeys(
        _fields(
            "learning_rate weight_decay adam_beta1 adam_beta2 max_grad_norm warmup_ratio "
            "warmup_steps beta epsilon epsilon_high delta temperature top_p num_train_epochs "
            "save_steps lora_alpha lora_dropout cosine_min_value_wrong cosine_max_value_wrong "
            "cosine_min_value_correct cosine_max_value_correct repetition_max_penalty "
            "vllm_gpu_memory_utilization vllm_server_timeout sapo_temperature_pos "
            "sapo_temperature_neg vllm_importance_sampling_clip_max "
            "vllm_importance_sampling_clip_min vllm_importance_sampling_cap"
        ),
        "float",
    ),
    **dict.fromkeys(
        _fields(
            "num_generations max_prompt_length max_completion_length per_device_train_batch_size "
            "gradient_accumulation_steps max_steps num_iterations seed save_total_limit lora_r "
            "cosine_max_len repetition_n_grams max_completion_len soft_punish_cache "
            "steps_per_generation generation_batch_size vllm_max_model_len vllm_max_model_length "
            "vllm_server_port vllm_tensor_parallel_size"
        ),
        "int",
    ),
    **dict.fromkeys(
        _fields(
            "bf16 fp16 gradient_checkpointing use_vllm use_peft trust_remote_code "
            "mask_truncated_completions vllm_enforce_eager vllm_enable_prefix_caching "
            "vllm_importance_sampling_correction"
        ),
        "bool",
    ),
    **dict.fromkeys(
        _fields(
            "model_name_or_path torch_dtype dtype attn_implementation system_prompt dataset_name "
            "dataset_config dataset_train_split dataset_prompt_column output_dir run_name "
            "lr_scheduler_type loss_type importance_sampling_level vllm_mode "
            "vllm_device vllm_server_base_url vllm_server_host vllm_importance_sampling_mode "
            "save_strategy"
        ),
        "str",
    ),
    "reward_funcs": "str_list",
    "reward_weights": "float_list",
    "lora_target_modules": "str_or_list",
    "report_to": "str_or_list",
    "lr_scheduler_kwargs": "dict",
    "scale_rewards": "bool_or_str",
}

# Fields that must be > 0 (the arithmetic divides by some of them).
POSITIVE = set(
    _fields(
        "num_generations per_device_train_batch_size gradient_accumulation_steps num_iterations "
        "learning_rate cosine_max_len"
    )
)

_KIND_NAMES = {
    "float": "a number",
    "int": "an integer",
    "bool": "true or false",
    "str": "a string",
    "str_list": "a list of strings",
    "float_list": "a list of numbers",
    "str_or_list": "a string or a list of strings",
    "dict": "a mapping",
    "bool_or_str": "true, false or a string",
}

# One-to-one fields: source field -> frugalrl option (config.py).
SIMPLE: dict[str, str] = {
    "model_name_or_path": "model.name_or_path",
    "trust_remote_code": "model.trust_remote_code",
    "attn_implementation": "model.attn_implementation",
    "gradient_checkpointing": "model.gradient_checkpointing",
    "dataset_train_split": "data.split",
    "dataset_prompt_column": "data.problem_field",
    "max_prompt_length": "data.max_prompt_tokens",
    "num_generations": "rollout.num_generations",
    "temperature": "rollout.temperature",
    "top_p": "rollout.top_p",
    "max_completion_length": "rollout.max_completion_tokens",
    "beta": "algo.beta",
    "num_iterations": "algo.num_iterations",
    "mask_truncated_completions": "algo.mask_truncated",
    "learning_rate": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "max_grad_norm": "optim.max_grad_norm",
    "seed": "train.seed",
    "save_total_limit": "train.save_total_limit",
    "output_dir": "train.output_dir",
}

_HUB = "hub-only: frugalrl does not push to the Hugging Face Hub (upload RUN_DIR/final yourself)"
_LOGS = "irrelevant to frugalrl: it logs every step (TensorBoard, wandb, metrics.jsonl)"
_EVAL = "no equivalent: frugalrl evaluates with its eval section (eval.path, eval.benchmarks)"
_SAMPLING = "no equivalent: frugalrl samples with temperature and top-p only"
_CODE = "irrelevant to frugalrl: code-execution rewards (frugalrl trains on math answers)"
_QUANT = "no equivalent: frugalrl does not quantize the model (QLoRA)"

# Fields known to have no frugalrl equivalent, and why.
UNMAPPED: dict[str, str] = {
    **dict.fromkeys(
        _fields(
            "hub_model_id hub_strategy hub_model_revision hub_private_repo hub_token push_to_hub "
            "push_to_hub_revision overwrite_hub_revision"
        ),
        _HUB,
    ),
    "model_revision": "hub-only: frugalrl loads the default branch (download the revision to a "
    "directory and set model.name_or_path to it)",
    **dict.fromkeys(
        _fields(
            "logging_steps logging_strategy logging_first_step log_level log_completions "
            "num_completions_to_print wandb_log_unique_prompts log_unique_prompts"
        ),
        _LOGS,
    ),
    "wandb_project": "set WANDB_PROJECT in the environment: frugalrl's wandb run reads it",
    "wandb_entity": "set WANDB_ENTITY in the environment: wandb reads it",
    "wandb_run_group": "no equivalent: frugalrl names the wandb run after the run directory",
    **dict.fromkeys(
        _fields(
            "do_eval eval_strategy eval_steps per_device_eval_batch_size benchmarks "
            "dataset_test_split"
        ),
        _EVAL,
    ),
    **dict.fromkeys(_fields("top_k min_p repetition_penalty generation_kwargs"), _SAMPLING),
    **dict.fromkeys(
        _fields(
            "code_language code_eval_test_batch_size code_eval_scoring_mode "
            "parallel_code_exec_per_proc e2b_router_url morph_router_url code_provider "
            "ioi_provider"
        ),
        _CODE,
    ),
    **dict.fromkeys(
        _fields("load_in_4bit load_in_8bit bnb_4bit_quant_type use_bnb_nested_quant"), _QUANT
    ),
    "overwrite_output_dir": "irrelevant to frugalrl: a run continues only with train --resume",
    "resume_from_checkpoint": "no equivalent in a recipe: frugalrl train --resume RUN_DIR",
    "gradient_checkpointing_kwargs": "no equivalent: frugalrl enables checkpointing itself",
    "use_liger_kernel": "no equivalent: frugalrl chunks the output layer itself "
    "(train.logprob_chunk_tokens)",
    "use_liger_loss": "no equivalent: frugalrl chunks the output layer itself "
    "(train.logprob_chunk_tokens)",
    "chat_template": "no equivalent: frugalrl applies the tokenizer's own chat template",
    "callbacks": "no equivalent: open-r1's callbacks push checkpoints to the Hub",
    "ds3_gather_for_generation": "no equivalent: DeepSpeed settings live in accelerate configs "
    "(accelerate_configs/)",
    "sync_ref_model": "no equivalent: frugalrl's reference model is the starting weights",
    "ref_model_mixup_alpha": "no equivalent: frugalrl's reference model is the starting weights",
    "ref_model_sync_steps": "no equivalent: frugalrl's reference model is the starting weights",
    "model_init_kwargs": "no equivalent: use model.dtype, model.attn_implementation",
    "disable_dropout": "no equivalent: frugalrl trains with the model's own dropout settings",
    "shuffle_dataset": "irrelevant to frugalrl: it always shuffles (train.seed)",
    "remove_unused_columns": "irrelevant to frugalrl: it reads data.problem_field and "
    "data.answer_field",
    "data_seed": "no equivalent: train.seed also orders the data",
    "adam_epsilon": "no equivalent: frugalrl's AdamW uses torch's eps",
    "optim": "no equivalent: frugalrl trains with AdamW",
    "tf32": "no equivalent: frugalrl sets no TF32 mode",
    "vllm_dtype": "no equivalent: vLLM loads the weights in their own dtype",
    "vllm_guided_decoding_regex": "no equivalent: frugalrl does not constrain decoding",
    "lora_modules_to_save": "no equivalent: peft.target_modules only",
    "lora_task_type": "irrelevant to frugalrl: always a causal LM",
    "use_rslora": "no equivalent: LoRA scale is alpha / r",
    "use_dora": "no equivalent: plain LoRA only",
    "dataset_mixture": "no equivalent: build the mix with frugalrl curate (e.g. "
    "recipes/curate-open-rs.yaml) and set data.path to its output",
}

# open-r1 reward -> (frugalrl reward, {frugalrl parameter: open-r1 field}).
REWARDS: dict[str, tuple[str, dict[str, str]]] = {
    "accuracy": ("accuracy", {}),
    "format": ("format", {}),
    "cosine": (
        "cosine",
        {
            "max_len": "cosine_max_len",
            "correct_at_zero": "cosine_max_value_correct",
            "correct_at_max": "cosine_min_value_correct",
            "wrong_at_zero": "cosine_min_value_wrong",
            "wrong_at_max": "cosine_max_value_wrong",
        },
    ),
    "repetition_penalty": (
        "repetition",
        {"ngram_size": "repetition_n_grams", "max_penalty": "repetition_max_penalty"},
    ),
    "length": ("kimi_length", {}),
    "soft_overlong_punishment": (
        "overlong",
        {"max_len": "max_completion_len", "cache_len": "soft_punish_cache"},
    ),
}
REWARD_PARAMS = {f for _, params in REWARDS.values() for f in params.values()}

NO_REWARD = {
    "tag_count": "no frugalrl equivalent (partial credit per think tag); format checks the layout",
    "reasoning_steps": "no frugalrl equivalent (counts 'Step 1:', bullets, 'First,' ...)",
    **dict.fromkeys(
        _fields("code binary_code ioi_code cf_code code_format"),
        "irrelevant to frugalrl: code execution (frugalrl trains on math answers)",
    ),
}

# Deviations, reported when the mapping that triggers them is made.
DEVIATIONS = {
    "accuracy": "accuracy: a gold answer math-verify cannot parse scores None (left out of "
    "training); open-r1 and open-rs give every completion 1.0 there",
    "cosine": "cosine: L is counted in tokens, not characters as open-r1/open-rs count it, and "
    "clipped at max_len (theirs is not: past cosine_max_len their cosine climbs back); "
    "cosine_max_len is used as a token count",
    "format:open-rs": "format: schema open-rs, open-rs's check ('\\n</think>\\n' exactly once); "
    "open-r1's format reward is schema open-r1 (convert with --source open-r1)",
    "format:open-r1": "format: schema open-r1, open-r1's check (the whole completion is "
    "<think>...</think><answer>...</answer>); open-rs's is schema open-rs (--source open-rs)",
    "kimi_length": "length -> kimi_length: L in tokens, not characters; a gold answer that "
    "cannot be parsed scores None (open-r1 counts every completion correct)",
    "bnpo": "loss_type bnpo -> token_mean: TRL divides each micro-batch's loss by that "
    "micro-batch's tokens, token_mean by the tokens of the whole step (equal when a step is one "
    "micro-batch)",
    "batch_std": "scale_rewards batch -> grpo_batch_std: the batch std is taken over the "
    "group-centred rewards (TRL: over the raw rewards)",
    "max_prompt_length": "max_prompt_length: TRL truncates a longer prompt from the left; "
    "frugalrl drops the problem",
    "bf16": "bf16: frugalrl keeps fp32 master weights and computes log-probs in fp32 (as "
    "DeepSpeed's bf16 mode does); with plain DDP open-r1's torch_dtype bfloat16 weights are bf16 "
    "themselves (model.dtype bfloat16 with train.precision fp32 reproduces that)",
    "vllm-server": "rollout.engine vllm-server talks to `frugalrl serve MODEL`, not to `trl "
    "vllm-serve`; without engine_options.url frugalrl starts the server itself",
    "answer_field": "open-r1 grades against the dataset's `solution` column: data.answer_field "
    "solution (open-rs-exp*.yaml read `answer`, the final answer alone)",
}


def _show(value: Any) -> str:
    """A value as the report prints it: short, one line."""
    if isinstance(value, str):
        text = repr(value)
    else:
        text = yaml.safe_dump(value, width=1000, default_flow_style=True).strip()
    text = text.removesuffix("\n...").replace("\n", " ")
    return text if len(text) <= 60 else f"{text[:57]}..."


def _coerce(kind: str, value: Any) -> tuple[bool, Any]:
    """(True, the value as ``kind``) or (False, None) when it is not one."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "float":
        if number:
            return math.isfinite(value), value
        if isinstance(value, str):
            try:
                return math.isfinite(float(value)), float(value)
            except ValueError:
                return False, None
        return False, None
    checks: dict[str, Callable[[Any], bool]] = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "str_list": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "float_list": lambda v: (
            isinstance(v, list)
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        ),
        "str_or_list": lambda v: (
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
        ),
        "dict": lambda v: isinstance(v, dict),
        "bool_or_str": lambda v: isinstance(v, bool | str),
    }
    return checks[kind](value), value


@dataclass
class Report:
    """What the conversion did: one line per field mapped, not mapped, or deviating."""

    source: str  # whose defaults fill the fields not set, e.g. "open-rs (TRL 69ad852)"
    mapped: list[tuple[str, str]] = field(default_factory=list)  # (frugalrl option, line)
    unmapped: dict[str, str] = field(default_factory=dict)  # source field -> why
    deviations: list[str] = field(default_factory=list)

    @property
    def mapped_lines(self) -> list[str]:
        """One line per option set: source -> frugalrl."""
        return [line for _, line in self.mapped]

    @property
    def unmapped_lines(self) -> list[str]:
        """One line per field not mapped: field: why."""
        return [f"{name}: {why}" for name, why in self.unmapped.items()]

    def lines(self) -> list[str]:
        """The report as printed."""
        unset = f"not in the file, the default of {self.source}"
        out = [f'mapped (source -> frugalrl; "(default)": {unset}):']
        out += [f"  {line}" for line in self.mapped_lines]
        out += ["not mapped:"] + [f"  {line}" for line in self.unmapped_lines or ["(none)"]]
        out += ["deviations:"] + [f"  {line}" for line in self.deviations or ["(none)"]]
        return out


class _Conversion:
    """One conversion: the source values, the recipe being built, and the report."""

    def __init__(self, data: dict[Any, Any], source: Source, procs: int, name: str) -> None:
        self.report = Report(f"{source.name} ({source.pins})")
        given = _checked_fields(data, self.report)
        self.values = {**source.defaults, **given}
        self.given, self.present = set(given), {str(k) for k in data}
        self.source, self.procs, self.default_name = source, procs, name
        self.recipe: dict[str, Any] = {}
        self.origin: dict[str, str] = {}  # frugalrl option -> the source fields it came from
        self.used: set[str] = set()  # source fields some report line names

    def get(self, name: str) -> Any:
        """The field's value: the file's, else the source's default (None: neither)."""
        return self.values.get(name)

    def has(self, name: str) -> bool:
        """Whether the field has a value (from the file or a default)."""
        return self.values.get(name) is not None

    def src(self, name: str) -> str:
        """``name value`` for the report, marked (default) when the file does not set it."""
        mark = "" if name in self.given else " (default)"
        self.used.add(name)
        return f"{name} {_show(self.values[name])}{mark}"

    def set(self, target: str, value: Any, line: str, *sources: str) -> None:
        """Set the frugalrl option ``target`` (dotted) and report ``line`` for it."""
        *parents, leaf = target.split(".")
        node = self.recipe
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        self.origin[target] = ", ".join(sources)
        self.report.mapped.append((target, line))

    def simple(self, name: str, target: str, value: Any = None) -> None:
        """Map ``name`` to ``target`` (its own value unless ``value`` is given)."""
        value = self.get(name) if value is None else value
        self.set(target, value, f"{self.src(name)} -> {target} {_show(value)}", name)

    def skip(self, name: str, why: str) -> None:
        """Report ``name`` as not mapped, and why."""
        self.used.add(name)
        self.report.unmapped[name] = why

    def deviate(self, key: str) -> None:
        """Report the deviation DEVIATIONS[key], once."""
        if DEVIATIONS[key] not in self.report.deviations:
            self.report.deviations.append(DEVIATIONS[key])


def _map_simple(c: _Conversion) -> None:
    """The one-to-one fields (SIMPLE)."""
    for name, target in SIMPLE.items():
        if c.has(name):
            c.simple(name, target)
    if c.has("max_prompt_length"):
        c.deviate("max_prompt_length")


def _map_name(c: _Conversion) -> None:
    """The recipe name: run_name, else the last part of output_dir, else the file's stem."""
    for name in ("run_name", "output_dir"):
        if c.has(name):
            value = Path(c.get(name)).name or c.default_name
            c.set("name", value, f"{c.src(name)} -> name {_show(value)}", name)
            return
    c.set("name", c.default_name, f"(the file's name) -> name {_show(c.default_name)}")


def _map_batch(c: _Conversion) -> None:
    """Completions per optimizer step (TRL counts completions) as prompts per step."""
    per_device, accum = c.get("per_device_train_batch_size"), c.get("gradient_accumulation_steps")
    group = c.get("num_generations")
    completions = per_device * accum * c.procs
    prompts = max(1, completions // group)
    exact = "" if completions % group == 0 else f" (rounded down: {completions} % {group} != 0)"
    line = (
        f"{c.src('per_device_train_batch_size')} x {c.src('gradient_accumulation_steps')} x "
        f"{c.procs} processes (--num-processes) = {completions} completions per optimizer step; "
        f"/ {c.src('num_generations')} -> train.prompts_per_step {prompts}{exact}"
    )
    c.set("train.prompts_per_step", prompts, line, "per_device_train_batch_size")
    c.set(
        "train.micro_batch_size",
        per_device,
        f"{c.src('per_device_train_batch_size')} -> train.micro_batch_size {per_device} "
        "(completions per forward/backward)",
        "per_device_train_batch_size",
    )
    for name, same in (
        ("steps_per_generation", accum),
        ("generation_batch_size", per_device * c.procs * accum),
    ):
        if c.has(name) and c.get(name) != same:
            c.skip(name, f"no equivalent: frugalrl samples one batch per step ({same} here)")
        elif c.has(name):
            c.report.mapped.append(("", f"{c.src(name)} -> (one batch per step, as frugalrl)"))


def _map_steps(c: _Conversion) -> None:
    """max_steps counts optimizer steps; train.steps counts batches, num_iterations passes each."""
    passes = c.get("num_iterations")
    per = f" / {c.src('num_iterations')}" if passes > 1 else ""
    if c.get("max_steps") > 0:
        steps = math.ceil(c.get("max_steps") / passes)
        c.set(
            "train.steps", steps, f"{c.src('max_steps')}{per} -> train.steps {steps}", "max_steps"
        )
        if "num_train_epochs" in c.given:
            c.skip("num_train_epochs", "irrelevant: max_steps takes precedence (as in TRL)")
    else:
        c.skip(
            "num_train_epochs",
            f"not mapped ({c.src('num_train_epochs')}): frugalrl counts steps, not epochs; set "
            "train.steps = epochs x problems / train.prompts_per_step (frugalrl's 500 kept)",
        )
    _map_saves(c, passes, per)


def _map_saves(c: _Conversion, passes: int, per: str) -> None:
    """save_strategy / save_steps -> train.save_every (in batches, as train.steps)."""
    strategy, every, total = c.get("save_strategy"), c.get("save_steps"), c.get("max_steps")
    if strategy == "steps" and 0 < every < 1 and total <= 0:
        c.skip("save_steps", "not mapped: a fraction of the run, and max_steps is not set")
    elif strategy == "steps" and every > 0:
        of_total = f" x {c.src('max_steps')}" if every < 1 else ""  # transformers: a fraction
        every = math.ceil((every * total if every < 1 else every) / passes)
        named = f"{c.src('save_strategy')}, " if "save_strategy" in c.given else ""
        line = f"{named}{c.src('save_steps')}{of_total}{per} -> train.save_every {every}"
        c.set("train.save_every", every, line, "save_steps")
    elif strategy in ("no", "epoch"):
        line = f"{c.src('save_strategy')} -> train.save_every 0 (saves at the end only)"
        c.set("train.save_every", 0, line, "save_strategy")
    else:
        c.skip("save_strategy", f"no equivalent for {_show(strategy)}: train.save_every N steps")


_SCHED = "lr_scheduler_type"


def _map_schedule(c: _Conversion) -> None:
    """HF lr_scheduler_type -> optim.lr_scheduler, min_lr_ratio and warmup_ratio."""
    kind, src = c.get("lr_scheduler_type"), c.src("lr_scheduler_type")
    if kind == "cosine":
        c.set("optim.lr_scheduler", "cosine", f"{src} -> optim.lr_scheduler cosine", _SCHED)
        line = f"{src} -> optim.min_lr_ratio 0.0 (decays to 0)"
        c.set("optim.min_lr_ratio", 0.0, line, _SCHED)
    elif kind == "cosine_with_min_lr":
        c.set("optim.lr_scheduler", "cosine", f"{src} -> optim.lr_scheduler cosine", _SCHED)
        _map_min_lr(c)
    elif kind in ("constant", "constant_with_warmup"):
        c.set("optim.lr_scheduler", "constant", f"{src} -> optim.lr_scheduler constant", _SCHED)
    else:
        c.skip(
            "lr_scheduler_type",
            f"no equivalent for {_show(kind)}: frugalrl schedules are cosine and constant; "
            "frugalrl's cosine to 0.1x kept",
        )
    _map_warmup(c, kind)


def _map_min_lr(c: _Conversion) -> None:
    """cosine_with_min_lr's floor: min_lr_rate, or min_lr relative to the learning rate."""
    kwargs = c.get("lr_scheduler_kwargs") or {}
    rate_ok, rate = _coerce("float", kwargs.get("min_lr_rate"))
    lr_ok, min_lr = _coerce("float", kwargs.get("min_lr"))
    if not (rate_ok or lr_ok):
        why = "cosine_with_min_lr needs min_lr_rate or min_lr (transformers refuses it without)"
        c.skip("lr_scheduler_kwargs", f"{why}; frugalrl's 0.1 kept")
        return
    ratio = rate if rate_ok else min_lr / c.get("learning_rate")
    line = f"{c.src('lr_scheduler_kwargs')} -> optim.min_lr_ratio {_show(ratio)}"
    c.set("optim.min_lr_ratio", ratio, line, "lr_scheduler_kwargs")


def _map_warmup(c: _Conversion, kind: str) -> None:
    """warmup_ratio, or warmup_steps / max_steps -> optim.warmup_ratio."""
    if "lr_scheduler_kwargs" in c.given and kind != "cosine_with_min_lr":
        c.skip("lr_scheduler_kwargs", "irrelevant: read for cosine_with_min_lr only")
    if kind == "constant":  # transformers' constant schedule has no warm-up
        line = f"{c.src('lr_scheduler_type')} -> optim.warmup_ratio 0.0 (no warm-up)"
        c.set("optim.warmup_ratio", 0.0, line, "lr_scheduler_type")
        for name in {"warmup_ratio", "warmup_steps"} & c.given:
            c.skip(name, "irrelevant: transformers' constant schedule has no warm-up")
    elif c.has("warmup_steps") and c.get("warmup_steps") > 0:
        steps, total = c.get("warmup_steps"), c.get("max_steps")
        if steps < 1 or total > 0:
            ratio = steps if steps < 1 else steps / total
            total_text = "" if steps < 1 else f" / {c.src('max_steps')}"
            line = f"{c.src('warmup_steps')}{total_text} -> optim.warmup_ratio {_show(ratio)}"
            c.set("optim.warmup_ratio", ratio, line, "warmup_steps")
        else:
            c.skip("warmup_steps", "not mapped: without max_steps the ratio is unknown")
    else:
        c.simple("warmup_ratio", "optim.warmup_ratio")


def _map_betas(c: _Conversion) -> None:
    """adam_beta1, adam_beta2 -> optim.betas."""
    betas = [c.get("adam_beta1"), c.get("adam_beta2")]
    line = f"{c.src('adam_beta1')}, {c.src('adam_beta2')} -> optim.betas {_show(betas)}"
    c.set("optim.betas", betas, line, "adam_beta1", "adam_beta2")


def _map_precision(c: _Conversion) -> None:
    """bf16 / torch_dtype -> train.precision and model.dtype."""
    dtype_field = "dtype" if c.has("dtype") else "torch_dtype"
    dtype = c.get(dtype_field)
    if dtype not in (None, "auto", "bfloat16", "float16", "float32"):
        c.skip(dtype_field, f"no equivalent for {_show(dtype)}: auto, bfloat16, float16, float32")
        dtype = None
    if c.get("fp16"):
        c.skip("fp16", "no equivalent: no fp16 mixed precision in frugalrl (train.precision bf16)")
    if c.get("bf16"):
        c.set("train.precision", "bf16", f"{c.src('bf16')} -> train.precision bf16", "bf16")
        if dtype is not None:
            line = f"{c.src(dtype_field)} -> model.dtype auto (fp32 masters under precision bf16)"
            c.set("model.dtype", "auto", line, dtype_field)
        c.deviate("bf16")
        return
    c.set("train.precision", "fp32", f"{c.src('bf16')} -> train.precision fp32", "bf16")
    if dtype is not None:
        c.simple(dtype_field, "model.dtype", dtype)


_VLLM_OPTIONS = {  # TRL field -> vLLM option (rollout.engine_options)
    "vllm_gpu_memory_utilization": "gpu_memory_utilization",
    "vllm_max_model_len": "max_model_len",
    "vllm_max_model_length": "max_model_len",
    "vllm_enforce_eager": "enforce_eager",
    "vllm_enable_prefix_caching": "enable_prefix_caching",
}


_LAYOUTS = {  # use_vllm without vllm_mode, by the TRL the source pins
    "vllm_device": "(vllm_mode not set: TRL 69ad852 runs vLLM on a GPU of its own)",
    "server": "(vllm_mode not set: TRL 0.18.0's default server)",
}


def _map_engine(c: _Conversion) -> None:
    """use_vllm / vllm_mode -> rollout.engine; the vLLM fields -> rollout.engine_options."""
    vllm_fields = [f for f in c.given if f.startswith("vllm_") and f != "vllm_mode"]
    if not c.get("use_vllm"):
        c.set("rollout.engine", "hf", f"{c.src('use_vllm')} -> rollout.engine hf", "use_vllm")
        for name in vllm_fields + (["vllm_mode"] if "vllm_mode" in c.given else []):
            c.skip(name, "irrelevant: use_vllm is false")
        return
    mode = c.get("vllm_mode") or c.source.vllm_layout
    engine = "vllm" if mode == "colocate" else "vllm-server"
    if mode not in ("colocate", "server", "vllm_device"):
        c.skip("vllm_mode", f"no equivalent for {_show(mode)}: server or colocate")
        return
    how = c.src("vllm_mode") if c.has("vllm_mode") else _LAYOUTS[c.source.vllm_layout]
    line = f"{c.src('use_vllm')}, {how} -> rollout.engine {engine}"
    c.set("rollout.engine", engine, line, "use_vllm")
    if engine == "vllm-server":
        c.deviate("vllm-server")
    _map_vllm_options(c, engine)


def _map_vllm_options(c: _Conversion, engine: str) -> None:
    """The vllm_* fields -> rollout.engine_options (server_options for a server)."""
    prefix = "rollout.engine_options" + (".server_options" if engine == "vllm-server" else "")
    for name, option in _VLLM_OPTIONS.items():
        if c.has(name):
            c.simple(name, f"{prefix}.{option}")
    if c.has("vllm_tensor_parallel_size"):
        c.simple("vllm_tensor_parallel_size", f"{prefix}.llm_kwargs.tensor_parallel_size")
    if c.has("vllm_device"):
        c.skip("vllm_device", "no equivalent: run `frugalrl serve MODEL` on that GPU")
    server = ("vllm_server_base_url", "vllm_server_host", "vllm_server_port")
    if engine == "vllm-server":
        _map_server_address(c)
        if c.has("vllm_server_timeout"):
            c.simple("vllm_server_timeout", "rollout.engine_options.startup_seconds")
    else:
        for name in [*server, "vllm_server_timeout"]:
            if c.has(name):
                c.skip(name, "irrelevant: vllm_mode colocate runs no server")
    _map_importance_sampling(c)


def _map_server_address(c: _Conversion) -> None:
    """vllm_server_base_url, or host and port -> rollout.engine_options.url."""
    if c.has("vllm_server_base_url"):
        c.simple("vllm_server_base_url", "rollout.engine_options.url")
    elif c.has("vllm_server_host") or c.has("vllm_server_port"):
        host = c.get("vllm_server_host") or "127.0.0.1"
        host = "127.0.0.1" if host == "0.0.0.0" else host
        url = f"http://{host}:{c.get('vllm_server_port') or 8000}"
        name = "vllm_server_host" if c.has("vllm_server_host") else "vllm_server_port"
        line = f"{c.src(name)} -> rollout.engine_options.url {_show(url)}"
        c.set("rollout.engine_options.url", url, line, name)


def _map_importance_sampling(c: _Conversion) -> None:
    """vllm_importance_sampling_* -> rollout.importance_sampling and its bounds."""
    if not c.get("vllm_importance_sampling_correction"):
        return
    mode = c.get("vllm_importance_sampling_mode") or "token_truncate"
    line = f"{c.src('vllm_importance_sampling_correction')} -> rollout.importance_sampling {mode}"
    c.set("rollout.importance_sampling", mode, line, "vllm_importance_sampling_correction")
    for name in ("vllm_importance_sampling_clip_max", "vllm_importance_sampling_cap"):
        if c.has(name):
            c.simple(name, "rollout.importance_sampling_clip_max")
    if c.has("vllm_importance_sampling_clip_min"):
        c.simple("vllm_importance_sampling_clip_min", "rollout.importance_sampling_clip_min")


# TRL loss_type -> (frugalrl policy loss, loss aggregation)
LOSS_TYPES = {
    "grpo": ("ppo_clip", "seq_mean_token_mean"),
    "bnpo": ("ppo_clip", "token_mean"),
    "dr_grpo": ("ppo_clip", "seq_mean_token_sum_norm"),
    "dapo": ("ppo_clip", "token_mean"),
    "cispo": ("cispo", "token_mean"),
    "sapo": ("sapo", "seq_mean_token_mean"),
}


def _map_loss(c: _Conversion) -> None:
    """loss_type (+ importance_sampling_level) -> policy loss and aggregation; its clip fields."""
    kind = c.get("loss_type")
    if kind not in LOSS_TYPES:
        c.skip("loss_type", f"no equivalent for {_show(kind)}: {', '.join(LOSS_TYPES)}")
        return
    loss, aggregation = LOSS_TYPES[kind]
    if c.get("importance_sampling_level") == "sequence" and loss == "ppo_clip":
        loss = "gspo"
        line = f"{c.src('importance_sampling_level')} -> algo.policy_loss gspo"
        c.set("algo.policy_loss", loss, line, "importance_sampling_level")
    elif c.get("importance_sampling_level") == "token":
        c.simple("importance_sampling_level", "algo.policy_loss", loss)
    elif c.has("importance_sampling_level"):
        c.skip("importance_sampling_level", f"no equivalent with loss_type {kind}")
    c.simple("loss_type", "algo.loss_aggregation", aggregation)
    if kind == "bnpo":
        c.deviate("bnpo")
    if loss != "gspo" and loss != "ppo_clip":
        c.simple("loss_type", "algo.policy_loss", loss)
    _map_clip(c, loss)


_CLIP_FIELDS = ("epsilon", "epsilon_high", "delta", "sapo_temperature_pos", "sapo_temperature_neg")


def _map_clip(c: _Conversion, loss: str) -> None:
    """epsilon / epsilon_high / delta / sapo temperatures as the chosen loss's parameters."""
    low = c.get("epsilon")
    high = c.get("epsilon_high") if c.has("epsilon_high") else low
    high_src = "epsilon_high" if c.has("epsilon_high") else "epsilon"
    params = {
        "ppo_clip": {"algo.epsilon_low": ("epsilon", low), "algo.epsilon_high": (high_src, high)},
        "gspo": {
            "algo.policy_loss_params.eps_low": ("epsilon", low),
            "algo.policy_loss_params.eps_high": (high_src, high),
        },
        "cispo": {"algo.policy_loss_params.max_weight": ("epsilon_high", high)},
        "sapo": {
            "algo.policy_loss_params.tau_pos": ("sapo_temperature_pos", None),
            "algo.policy_loss_params.tau_neg": ("sapo_temperature_neg", None),
        },
    }[loss]
    if loss == "ppo_clip" and c.has("delta"):
        params["algo.dual_clip_c"] = ("delta", c.get("delta"))
    for target, (name, value) in params.items():
        if c.has(name):
            c.simple(name, target, value)
    for name in _CLIP_FIELDS:
        if name in c.given and name not in {n for n, _ in params.values()}:
            c.skip(name, f"not mapped: frugalrl's policy loss {loss} takes no such parameter")


def _map_advantage(c: _Conversion) -> None:
    """scale_rewards -> the advantage estimator (TRL's eps is 1e-4, as algo.advantage_eps)."""
    scale = c.get("scale_rewards")
    estimator = {True: "grpo", "group": "grpo", False: "dr_grpo", "none": "dr_grpo"}.get(scale)
    estimator = "grpo_batch_std" if scale == "batch" else estimator
    if estimator is None:
        c.skip("scale_rewards", f"no equivalent for {_show(scale)}: group, batch, none")
        return
    c.simple("scale_rewards", "algo.advantage", estimator)
    if estimator != "dr_grpo":
        c.set("algo.advantage_eps", 1e-4, "(TRL's std + 1e-4) -> algo.advantage_eps 0.0001")
    if estimator == "grpo_batch_std":
        c.deviate("batch_std")


def _reward_weights(c: _Conversion, funcs: list[str]) -> list[tuple[float, str]]:
    """Each reward's weight, with how the report names it (TRL's default: 1.0 each)."""
    weights = c.get("reward_weights")
    if weights is not None and len(weights) != len(funcs):
        why = f"{len(weights)} weights for {len(funcs)} reward_funcs (TRL refuses this); 1.0 each"
        c.skip("reward_weights", why)
    if weights is None or len(weights) != len(funcs):
        return [(1.0, "weight 1.0 (default)")] * len(funcs)
    return [(float(w), f"reward_weights[{i}] {_show(w)}") for i, w in enumerate(weights)]


def _map_rewards(c: _Conversion) -> None:
    """reward_funcs + reward_weights (+ each reward's parameters) -> rewards."""
    funcs = c.get("reward_funcs")
    c.used |= {"reward_funcs", "reward_weights"}
    rewards: dict[str, dict[str, Any]] = {}
    for i, (name, (weight, how)) in enumerate(zip(funcs, _reward_weights(c, funcs), strict=True)):
        where = f"reward_funcs[{i}] {name}" + ("" if "reward_funcs" in c.given else " (default)")
        if name in REWARDS:
            _add_reward(c, rewards, name, weight, f"{where}, {how}")
        else:
            c.skip(where, f"{NO_REWARD.get(name, 'unknown open-r1 reward')}; dropped ({how})")
    for name in sorted(REWARD_PARAMS & c.given):
        if not any(name in REWARDS[f][1].values() for f in funcs if f in REWARDS):
            c.skip(name, "irrelevant: its reward is not in reward_funcs")
    if not rewards:
        c.skip("reward_funcs", "no reward could be mapped; frugalrl's accuracy + format kept")
        if "reward_weights" in c.given:
            c.skip("reward_weights", "irrelevant: no reward could be mapped")
        return
    c.recipe["rewards"] = list(rewards.values())
    c.origin["rewards"] = "reward_funcs"


def _add_reward(
    c: _Conversion, rewards: dict[str, dict[str, Any]], name: str, weight: float, src: str
) -> None:
    """The open-r1 reward ``name`` as a frugalrl term; listed twice, one term, weights added."""
    target, params = REWARDS[name]
    if target in rewards:  # frugalrl lists a reward once
        rewards[target]["weight"] += weight
        total = _show(rewards[target]["weight"])
        c.report.mapped.append(("rewards", f"{src} -> rewards: {target} weight {total} (added)"))
        return
    c.report.mapped.append(("rewards", f"{src} -> rewards: {target} weight {_show(weight)}"))
    rewards[target] = {"name": target, "weight": weight, **_reward_params(c, target, params)}
    _reward_deviation(c, target)


def _reward_params(c: _Conversion, target: str, params: dict[str, str]) -> dict[str, Any]:
    """The frugalrl reward's parameters from their open-r1 fields (or open-r1's defaults)."""
    out: dict[str, Any] = {}
    if target == "format":
        out["schema"] = c.source.format_schema
        line = f"(format is {c.source.name}'s) -> rewards.format.schema {_show(out['schema'])}"
        c.report.mapped.append(("rewards", line))
    for param, name in params.items():
        out[param] = c.get(name)
        line = f"{c.src(name)} -> rewards.{target}.{param} {_show(out[param])}"
        c.report.mapped.append(("rewards", line))
    return out


def _reward_deviation(c: _Conversion, target: str) -> None:
    """Report how the frugalrl reward differs from the open-r1 one, where it does."""
    key = {"format": f"format:{c.source.format_schema}"}.get(target, target)
    if key in DEVIATIONS:
        c.deviate(key)


def _map_data(c: _Conversion) -> None:
    """dataset_name / system_prompt -> data (open-r1's prompt: system turn + the problem)."""
    if c.has("dataset_name"):
        name = c.get("dataset_name")
        c.simple("dataset_name", "data.path")
        c.report.deviations.append(
            f"data.path {_show(name)} is a Hub dataset: frugalrl loads it with `datasets` when "
            "training starts (a download); for an offline run export the split to JSONL and set "
            "data.path to the file"
        )
    elif "dataset_mixture" not in c.present:
        c.report.deviations.append("no dataset_name: set data.path to your training problems")
    if c.has("dataset_config"):
        c.skip("dataset_config", "no equivalent: export that configuration to JSONL for data.path")
    c.set(
        "data.answer_field",
        "solution",
        "(open-r1's accuracy reads the `solution` column) -> data.answer_field 'solution'",
    )
    c.deviate("answer_field")
    c.set(
        "data.prompt_template",
        "plain",
        "(open-r1's prompt: [system_prompt,] the problem as user turn) -> data.prompt_template "
        "'plain'",
    )
    if c.has("system_prompt"):
        c.simple("system_prompt", "data.system_prompt")


def _map_peft(c: _Conversion) -> None:
    """use_peft + lora_* -> peft (TRL ModelConfig's defaults for the unset ones)."""
    lora = [f for f in c.given if f.startswith("lora_")]
    if not c.get("use_peft"):
        for name in lora:
            c.skip(name, "irrelevant: use_peft is false")
        return
    c.set("peft", {}, f"{c.src('use_peft')} -> peft (LoRA)", "use_peft")
    for name, option in (("lora_r", "r"), ("lora_alpha", "alpha"), ("lora_dropout", "dropout")):
        c.simple(name, f"peft.{option}")
    if c.has("lora_target_modules"):
        c.simple("lora_target_modules", "peft.target_modules")
    else:
        c.report.deviations.append(
            "lora_target_modules not set: peft's default for the architecture in open-r1 "
            "(q_proj, v_proj for Qwen2 and Llama); frugalrl's 'all-linear' kept"
        )


def _map_logging(c: _Conversion) -> None:
    """report_to -> logging.wandb, logging.tensorboard."""
    if not c.has("report_to"):
        return
    given = c.get("report_to")
    targets = {given} if isinstance(given, str) else set(given)
    if "all" in targets:
        targets |= {"wandb", "tensorboard"}
    c.simple("report_to", "logging.wandb", "wandb" in targets)
    c.simple("report_to", "logging.tensorboard", "tensorboard" in targets)
    other = sorted(targets - {"wandb", "tensorboard", "all", "none"})
    if other:
        c.report.deviations.append(f"report_to {', '.join(other)}: no equivalent, not logged")


def _report_unused(c: _Conversion) -> None:
    """Every field of the file gets a line: those no handler named had no effect here."""
    for name in sorted(c.given - c.used):
        c.skip(name, "read, but no effect with the other fields set here")


HANDLERS: tuple[Callable[[_Conversion], None], ...] = (
    _map_name,
    _map_simple,
    _map_precision,
    _map_data,
    _map_engine,
    _map_rewards,
    _map_loss,
    _map_advantage,
    _map_schedule,
    _map_betas,
    _map_batch,
    _map_steps,
    _map_peft,
    _map_logging,
    _report_unused,
)
# Every field the converter knows (SIMPLE's are in KINDS); any other is reported as unknown.
KNOWN = set(KINDS) | set(UNMAPPED)


def _checked_fields(data: dict[Any, Any], report: Report) -> dict[str, Any]:
    """The fields of the file that can be read, each of its kind; the others reported."""
    given: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key)
        if name not in KNOWN:
            report.unmapped[name] = "unknown field: not an open-r1 / TRL GRPO option; not mapped"
        elif name in UNMAPPED:
            report.unmapped[name] = UNMAPPED[name]
        elif value is None:
            continue  # TRL's None: the default behaviour
        else:
            ok, coerced = _coerce(KINDS[name], value)
            if not ok:
                kind = _KIND_NAMES[KINDS[name]]
                report.unmapped[name] = f"{_show(value)} is not {kind}; not mapped (default used)"
            elif name in POSITIVE and coerced <= 0:
                report.unmapped[name] = f"{_show(value)} must be > 0; not mapped (default used)"
            else:
                given[name] = coerced
    return given


def _drop(recipe: dict[str, Any], target: str) -> None:
    """Remove the dotted option ``target`` from ``recipe``."""
    *parents, leaf = target.split(".")
    node = recipe
    for part in parents:
        node = node[part]
    node.pop(leaf, None)


def _reject(c: _Conversion, target: str, why: str) -> None:
    """Drop ``target`` from the recipe; report ``why`` under the source field it came from."""
    c.report.unmapped[c.origin.pop(target) or target] = f"{target} {why}; default used"
    c.report.mapped = [m for m in c.report.mapped if m[0] != target]
    _drop(c.recipe, target)


def _validated(c: _Conversion, where: str) -> Config:
    """The recipe as frugalrl loads it; a value it rejects is dropped and reported instead (and
    the recipe validated again: at most once per option set)."""
    for _ in range(len(c.origin) + 1):
        try:
            return Config.model_validate(c.recipe)
        except ValidationError as err:
            first = err.errors()[0]
            loc = [str(p) for p in first["loc"]]
            found = [".".join(loc[:k]) for k in range(len(loc), 0, -1)]
            found = [t for t in found if t in c.origin]
            if not found:
                raise UserError(format_validation_error(err, where)) from None
            _reject(c, found[0], f"{_show(first.get('input'))} rejected: {first['msg']}")
        except UserError as err:  # a loss checks its own parameters (algo.policy_loss_params)
            params = [t for t in c.origin if t.startswith("algo.policy_loss_params.")]
            if not params:
                raise UserError(f"{where}: the converted recipe does not load: {err}") from None
            for target in params:
                _reject(c, target, f"rejected: {err}")
    raise UserError(f"{where}: the converted recipe does not load")


def convert(
    data: dict[Any, Any], source: str = "open-rs", num_processes: int = 1, where: str = "config"
) -> tuple[dict[str, Any], Report]:
    """The frugalrl recipe (a dict that loads with ``load_config``) for the open-r1 config
    ``data`` read from ``where``, and the report; ``num_processes`` is the number of training
    processes the source ran with (accelerate's num_processes)."""
    if source not in SOURCES:
        raise UserError(f"unknown source '{source}'; valid choices: {', '.join(SOURCES)}")
    if num_processes < 1:
        raise UserError(f"--num-processes must be at least 1, got {num_processes}")
    if not data:
        raise UserError(f"{where}: empty, nothing to convert")
    c = _Conversion(data, SOURCES[source], num_processes, Path(where).stem)
    for handler in HANDLERS:
        handler(c)
    config = _validated(c, where)
    # What was set, in config.py's order (the defaults stay frugalrl's, unwritten).
    return config.model_dump(mode="json", exclude_unset=True), c.report


def convert_file(
    path: Path, source: str = "open-rs", num_processes: int = 1
) -> tuple[str, list[str]]:
    """The recipe YAML for the open-r1 config at ``path`` (its report as a comment on top), and
    the report's lines."""
    data = read_yaml_mapping(path, what="config")
    recipe, report = convert(data, source, num_processes, where=str(path))
    header = (
        f"Converted by `frugalrl convert` from {path.name} ({source}, {num_processes} "
        "training processes); docs/convert.md. Report:"
    )
    comment = "".join(f"# {line}".rstrip() + "\n" for line in [header, *report.lines()])
    body = yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True, width=100)
    return comment + body, report.lines()
