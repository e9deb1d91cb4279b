"""The experiment config: one typed tree, loaded from a YAML recipe plus ``--set`` overrides.

Every option is documented where it is declared, with its default and the reason for it.
Defaults follow the open-rs recipe (Dang & Ngo 2025, docs/algorithms.md#open-rs) unless noted.
Unknown keys and bad values are user errors that name the key and the valid choices.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from frugalrl.errors import UserError

if TYPE_CHECKING:
    from frugalrl.rewards.compose import RewardSpec


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name_or_path: str = Field(
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        description="HF hub id or local directory; loaded with AutoModelForCausalLM.from_pretrained.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto': bfloat16 on a GPU that supports it, float32 on CPU."
    )
    gradient_checkpointing: bool = Field(
        False, description="Trade compute for memory; open-rs turns it on for the 1.5B model."
    )
    trust_remote_code: bool = False
    attn_implementation: str | None = Field(
        None,
        description="transformers' attention kernel ('sdpa', 'eager', 'flash_attention_2', ...); "
        "None: transformers' default (SDPA). With flash attention packed micro-batches "
        "(train.packing) attend within each sequence only, in one row.",
    )


class LengthTargetsConfig(_Section):
    """A target length per training problem, stated in its prompt (L1 / LCPO,
    docs/algorithms.md#l1); the ``l1_exact`` / ``l1_max`` rewards score against it."""

    kind: Literal["exact", "max"] = Field(
        "exact",
        description="'exact': \"Think for N tokens.\" (L1-Exact); 'max': \"Think for maximum N "
        'tokens." (L1-Max).',
    )
    low: int = Field(100, gt=0, description="Smallest target; L1: 100 (of a 4k budget).")
    high: int = Field(4000, gt=0, description="Largest target; L1: 4,000. Scale both to your cap.")
    budget_free: float = Field(
        0.0, ge=0, le=1, description="Share of problems without a target (L1's --use_both: 0.5)."
    )
    seed: int = Field(0, description="Seed of the draws (same targets on resume).")

    @model_validator(mode="after")
    def _ordered(self) -> LengthTargetsConfig:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


class DataConfig(_Section):
    path: str = Field(
        "", description="Training problems: a JSONL/JSON/parquet file, or a HF dataset name."
    )
    split: str = Field("train", description="Split to read when `path` is a HF dataset.")
    problem_field: str = Field("problem", description="Field holding the problem text.")
    answer_field: str = Field("answer", description="Field holding the gold final answer.")
    prompt_template: str = Field(
        "plain",
        description="Named template (see frugalrl.data.prompts) or a format string with {problem}.",
    )
    system_prompt: str | None = Field(
        None, description="System turn; None uses the template's own (if any)."
    )
    max_prompt_tokens: int = Field(
        512, gt=0, description="open-rs: 512; longer prompts are dropped."
    )
    limit: int | None = Field(None, gt=0, description="Use only the first N problems (debugging).")
    length_targets: LengthTargetsConfig | None = Field(
        None, description="Per-problem target lengths in the prompt (L1); None: no targets."
    )


class RolloutConfig(_Section):
    engine: str = Field(
        "hf",
        description="Generation engine by name: 'hf' (KV-cache sampling on the training model, "
        "prompts prefilled once per group, finished samples leave the batch), 'hf-generate' "
        "(transformers generate, for caches 'hf' does not handle), 'vllm' (vLLM in this process "
        "on the training GPU, weights reloaded after each step), 'vllm-server' (vLLM in its own "
        "process, `frugalrl serve`, weights sent after each step), 'hf-process' ('hf' in a "
        "process of its own with its own copy of the weights: sampling beside training, "
        "rollout.max_staleness). docs/scale-out.md#vllm-rollouts.",
    )
    num_generations: int = Field(
        6, ge=2, description="G completions per prompt; open-rs uses 6 (a group needs ≥ 2)."
    )
    temperature: float = Field(0.7, gt=0, description="Sampling temperature; open-rs: 0.7.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling; open-rs: 1.0 (off).")
    max_completion_tokens: int = Field(
        3584, gt=0, description="Length cap; open-rs: 3,584 (a completion hitting it is truncated)."
    )
    batch_size: int = Field(
        256, gt=0, description="Most sequences per sampling call, in whole groups (bounds memory)."
    )
    engine_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the engine. vllm: gpu_memory_utilization (0.3), max_model_len, "
        "seed, sleep (true: free the GPU between phases, where vLLM has sleep mode), "
        "enforce_eager, cpu_kv_cache_gib, enable_prefix_caching, llm_kwargs "
        "(frugalrl.rollout.vllm_llm.VLLMOptions). vllm-server: url (none: start a server "
        "here), token or token_file, timeout_seconds, startup_seconds, python, "
        "server_options (the vllm options), transfer_host "
        "(frugalrl.rollout.vllm_client.ServerEngineOptions).",
    )
    importance_sampling: str | None = Field(
        None,
        description="Correct the policy term for the engine/trainer log-prob mismatch "
        "(frugalrl.algo.importance): token_truncate, token_mask, sequence_truncate, "
        "sequence_mask; None: off. Worth it when another engine (vLLM) samples; TRL and verl "
        "turn it on there.",
    )
    importance_sampling_clip_max: float | None = Field(
        2.0, gt=0, description="Upper bound C_max on the IS ratio (verl's TIS cap 2; TRL 3)."
    )
    importance_sampling_clip_min: float | None = Field(
        None, ge=0, description="Lower bound C_min on the IS ratio (None: none)."
    )
    max_staleness: int = Field(
        0,
        ge=0,
        description="Sample up to K steps ahead, beside training, from weights at most K steps "
        "old (verl's one-step-off-policy is 1); 0: sample each step's batch from the latest "
        "weights, between steps. K > 0 needs an engine that samples beside training "
        "(hf-process, or vllm-server with one training process) and "
        "rollout.importance_sampling. docs/algorithms.md#asynchronous-training.",
    )

    @model_validator(mode="after")
    def _stale_batches_are_corrected(self) -> RolloutConfig:
        if self.max_staleness and self.importance_sampling is None:
            raise ValueError(
                "rollout.max_staleness > 0 trains on batches sampled by older weights: set "
                "rollout.importance_sampling (e.g. token_truncate) to correct for them"
            )
        return self


class RewardConfig(_Section):
    """One weighted reward term; any further keys are the reward's own parameters."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str = Field(description="Registered reward name, or 'module:function' for your own.")
    weight: float = Field(1.0, description="Weight of this term in the total reward.")
    schedule: dict[int, dict[str, Any]] = Field(
        default_factory=dict,
        description="Parameters that change during training: {first step: {param: value}}; from "
        "that (0-based) step on they replace the values before them, e.g. ThinkPrune's length "
        "limit lowered in stages, {40: {max_tokens: 160}, 80: {max_tokens: 128}} "
        "(docs/algorithms.md#thinkprune). Logged as reward/<name>/<param>. {}: fixed.",
    )

    @field_validator("schedule")
    @classmethod
    def _stages_start_at_steps(cls, v: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
        for step, stage in v.items():
            if step < 0:
                raise ValueError(f"a schedule stage starts at a step >= 0, got {step}")
            clash = {"name", "weight", "schedule"} & set(stage)
            if clash:
                raise ValueError(f"a schedule stage sets parameters only, not '{min(clash)}'")
        return dict(sorted(v.items()))

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def spec(self) -> RewardSpec:
        from frugalrl.rewards.compose import RewardSpec

        return RewardSpec(self.name, self.weight, self.params, tuple(self.schedule.items()))


def _default_rewards() -> list[RewardConfig]:
    return [RewardConfig(name="accuracy", weight=1.0), RewardConfig(name="format", weight=1.0)]


# ppo_clip's parameters as recipe fields (they came first) -> its keyword arguments.
PPO_CLIP_FIELDS = {
    "epsilon_low": "eps_low",
    "epsilon_high": "eps_high",
    "dual_clip_c": "dual_clip_c",
}


class AlgoConfig(_Section):
    advantage: str = Field(
        "grpo",
        description="Advantage estimator by name (docs/algorithms.md#advantage-estimators).",
    )
    advantage_eps: float = Field(
        1e-4,
        ge=0,
        description="open-rs: (r − mean)/(std + 1e-4); passed as `eps` to the estimators that "
        "divide by a std (grpo, grpo_batch_std, reinforce_pp, rloo_batch_whiten).",
    )
    advantage_params: dict[str, Any] = Field(
        default_factory=dict,
        description="The estimator's own further parameters, as keyword arguments ({}: none).",
    )
    policy_loss: str = Field(
        "ppo_clip",
        description="Policy loss by name (docs/algorithms.md#policy-losses): ppo_clip (GRPO, "
        "open-rs, DAPO), gspo (sequence-level ratio, Qwen3), cispo (clipped IS-weighted "
        "REINFORCE, MiniMax-M1), sapo (soft gate, Qwen). All share one signature; IS weights, KL "
        "and entropy are composed around any of them.",
    )
    policy_loss_params: dict[str, Any] = Field(
        default_factory=dict,
        description="The selected loss's own parameters (defaults are its paper's): gspo "
        "eps_low 3e-4, eps_high 4e-4; cispo max_weight 5.0, min_weight None; sapo tau_pos 1.0, "
        "tau_neg 1.05. ppo_clip's are the three fields below.",
    )
    loss_aggregation: str = Field(
        "seq_mean_token_mean", description="How per-token losses become one number (GRPO default)."
    )
    epsilon_low: float = Field(0.2, ge=0, description="ppo_clip: clip below 1; open-rs/GRPO: 0.2.")
    epsilon_high: float = Field(
        0.2, ge=0, description="ppo_clip: clip above 1; DAPO clip-higher: 0.28."
    )
    beta: float = Field(
        0.04,
        ge=0,
        description="KL-to-reference weight; open-rs: 0.04; 0 = no reference model loaded. "
        "In the loss, or in the reward with kl_in_reward.",
    )
    kl_estimator: str = Field(
        "k3",
        description="KL estimator by name; open-rs/TRL use k3 in the loss, Arora & Zanette k1 in "
        "the reward (summed over tokens, k1 is the sequence log-ratio).",
    )
    num_iterations: int = Field(
        1, ge=1, description="μ: optimisation passes per generated batch; open-rs: 1."
    )
    mask_truncated: bool = Field(
        False, description="Drop truncated completions from the loss (DAPO overlong filtering)."
    )
    dual_clip_c: float | None = Field(
        None,
        gt=1,
        description="Dual-clip bound: for A < 0 cap the per-token loss at −c·A (verl's "
        "clip_ratio_c = 3), so one token the old policy found unlikely cannot dominate the "
        "batch; None = off, as in GRPO, open-rs and the papers. Binds only when μ > 1 (with one "
        "pass the ratio is 1).",
    )
    entropy_coef: float = Field(
        0.0,
        ge=0,
        description="Entropy bonus weight, subtracted per token before aggregation (verl); "
        "0 = off, as in every paper here. When > 0 the entropy is computed with its gradient "
        "(more memory).",
    )
    kl_in_reward: bool = Field(
        False,
        description="Fold β·Σ_t KL_t (with kl_estimator) into each completion's reward before "
        "the advantages, and drop the KL term from the loss: Arora & Zanette (k1, β 0.001), "
        "verl's use_kl_in_reward. False = KL as a loss term, as GRPO and open-rs.",
    )
    kl_ratio_correction: bool = Field(
        False,
        description="Weight the loss KL by the PPO ratio (TRL's use_bias_correction_kl, on by "
        "default in TRL 1.16): the unbiased reverse-KL gradient. Off, as in GRPO, open-rs, verl.",
    )
    dynamic_sampling: bool = Field(
        False,
        description="DAPO dynamic sampling: drop groups whose scored rewards are all equal (zero "
        "advantage, no signal) and sample more prompts until train.prompts_per_step informative "
        "groups are collected. DAPO filters on accuracy alone; here on the total reward, what the "
        "advantage sees. Off by default (open-rs, GRPO); DAPO turns it on.",
    )
    max_sampling_rounds: int = Field(
        3,
        ge=0,
        description="Dynamic sampling: at most this many extra generation rounds per step, then "
        "train on the informative groups collected (none: the step is skipped); bounds the cost "
        "on data too easy or too hard (DAPO's max_num_gen_batches, here counted past the first).",
    )

    def check_loss_fields(self) -> None:
        """A UserError when a ppo_clip field is set for another loss (it would be ignored)."""
        if self.policy_loss == "ppo_clip":
            return
        # Compared with the defaults, not model_fields_set: a saved config lists them all.
        fields = type(self).model_fields
        given = [f for f in PPO_CLIP_FIELDS if getattr(self, f) != fields[f].default]
        if given:
            raise UserError(
                f"algo.{given[0]} is a ppo_clip parameter; policy loss '{self.policy_loss}' "
                "takes its parameters from algo.policy_loss_params"
            )

    @property
    def loss_params(self) -> dict[str, Any]:
        """The keyword arguments of the selected policy loss."""
        params = dict(self.policy_loss_params)
        if self.policy_loss == "ppo_clip":  # its parameters predate policy_loss_params
            for name, param in PPO_CLIP_FIELDS.items():
                params.setdefault(param, getattr(self, name))
        return params

    @property
    def estimator_params(self) -> dict[str, Any]:
        """The keyword arguments of the selected advantage estimator."""
        from frugalrl.algo import ADVANTAGES
        from frugalrl.registry import keyword_params

        known = keyword_params(ADVANTAGES.get(self.advantage))
        eps = {"eps": self.advantage_eps} if known is None or "eps" in known else {}
        return {**eps, **self.advantage_params}

    @property
    def loss_beta(self) -> float:
        """β of the loss's KL term: 0 when the KL is folded into the reward instead."""
        return 0.0 if self.kl_in_reward else self.beta

    @property
    def reward_beta(self) -> float:
        """β of the KL penalty on the reward: 0 unless ``kl_in_reward``."""
        return self.beta if self.kl_in_reward else 0.0


class ScoringConfig(_Section):
    workers: int | Literal["auto"] = Field(
        "auto",
        description="Reward-scoring processes; 'auto': one per core (≤ 8); 0: in-process, "
        "no watchdog (a hanging reward would hang the run).",
    )
    timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Watchdog: groups still running after this long without "
        "progress score None (math-verify's own per-call limit is 2 s).",
    )

    @field_validator("workers")
    @classmethod
    def _non_negative(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be 'auto' or ≥ 0")
        return v

    def resolved_workers(self) -> int:
        from frugalrl.rewards.scoring import default_workers

        return default_workers() if self.workers == "auto" else int(self.workers)


class OptimConfig(_Section):
    lr: float = Field(1e-6, gt=0, description="Peak learning rate; open-rs: 1e-6.")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.99)
    lr_scheduler: Literal["cosine", "constant"] = Field(
        "cosine", description="open-rs: cosine decaying to min_lr_ratio × lr."
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="open-rs: 0.1.")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="open-rs: 10% of the steps.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping (TRL default 1.0).")


class TrainConfig(_Section):
    steps: int = Field(500, gt=0, description="Generation batches to train on; open-rs: 500.")
    prompts_per_step: int = Field(
        12, gt=0, description="Prompts per batch; open-rs: 12 (×6 = 72 completions)."
    )
    micro_batch_size: int = Field(
        6, gt=0, description="Completions per forward/backward; the rest is gradient accumulation."
    )
    micro_batch_tokens: int | None = Field(
        None,
        gt=0,
        description="Token budget per micro-batch (rows × row width, padded or packed), filled "
        "with completions sorted by length, at most micro_batch_size each; None: runs of "
        "micro_batch_size in sampling order. Sorting cuts padding; the loss is the same.",
    )
    logprob_chunk_tokens: int | None = Field(
        512,
        gt=0,
        description="Completion tokens per output-layer chunk when computing log-probs, each "
        "chunk recomputed in backward: (tokens, vocab) logits never exist at once "
        "(Qwen's 151,936-token vocabulary: 0.3 GB per 512 tokens in fp32; a 4,096-token "
        "log-prob + loss stage peaks at 19% of the plain one, benchmarks/logprob_memory.py). "
        "None: all at once.",
    )
    packing: bool = Field(
        True,
        description="Pack several sequences into each row of the training forward, with "
        "position ids restarting and attention kept within each sequence, instead of padding "
        "every row to the micro-batch's longest: rows as wide as the longest sequence under "
        "SDPA / eager attention (never more compute than padding), one row under flash "
        "attention. Same log-probs up to float rounding; off where the model cannot keep "
        "packed sequences apart. docs/design.md#packing.",
    )
    skip_zero_advantage: bool = Field(
        True,
        description="Leave completions with advantage 0 out of forward/backward when the loss "
        "has no KL and no entropy term: their gradient is exactly 0, the loss unchanged.",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="'bf16': mixed precision, bf16 matrix products over fp32 master weights and "
        "optimizer state, log-probs and loss in fp32, the reference model in bf16 (what every "
        "GPU run uses; 2.5-6x the fp32 matmul rate on CPUs with AMX, as measured by "
        "benchmarks/mfu.py); 'fp32': all in model.dtype. "
        "docs/design.md#precision.",
    )
    lm_head_fp32: bool = Field(
        False,
        description="With precision bf16, compute the output layer's logits in fp32 (ScaleRL's "
        "cast_lm_head_to_fp32): log-probs closer to fp32's, at the head's fp32 cost.",
    )
    seed: int = Field(42, description="open-rs: 42.")
    save_every: int = Field(50, ge=0, description="Checkpoint every N steps (0: only at the end).")
    save_total_limit: int = Field(2, ge=1, description="Keep only the newest N checkpoints.")
    output_dir: str = Field("runs/{name}", description="Run directory; {name} is the recipe name.")
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: int | None = Field(None, gt=0, description="torch CPU threads (None: torch default).")

    @field_validator("output_dir")
    @classmethod
    def _only_name_placeholder(cls, v: str) -> str:
        try:  # Config.run_dir formats it: "{nme}" or a lone "{" must fail here, not mid-train
            v.format(name="")
        except (KeyError, IndexError, ValueError, AttributeError) as e:
            raise ValueError(f"only the placeholder {{name}} may appear ({e!r})") from None
        return v


class EvalConfig(_Section):
    path: str | None = Field(None, description="Held-out problems (JSONL), named 'heldout'.")
    benchmarks: list[str] = Field(
        default_factory=list,
        description="Also evaluate these (shipped names such as math500, or JSONL paths), "
        "with the same sampling; [] = held-out only.",
    )
    num_problems: int | None = Field(
        None, gt=0, description="Evaluate the first N problems of each set."
    )
    samples_per_problem: int = Field(
        4, gt=0, description="k samples per problem, averaged (avg@k)."
    )
    temperature: float = Field(0.6, gt=0, description="open-rs / Arora & Zanette evaluate at 0.6.")
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int | None = Field(None, gt=0, description="None: the rollout length cap.")
    before: bool = Field(True, description="Evaluate the starting model, for the base row.")
    after: bool = Field(True, description="Evaluate the trained model, for the final row.")
    every_steps: int = Field(
        0,
        ge=0,
        description="Also evaluate the held-out set every N training steps (0: never), logged "
        "as eval/accuracy and eval/mean_tokens: a collapse shows in held-out numbers first.",
    )
    every_num_problems: int | None = Field(
        None,
        gt=0,
        description="Held-out problems for those periodic evaluations (None: num_problems); a "
        "small subset keeps them cheap.",
    )


class PeftConfig(_Section):
    """LoRA adapters (Hu et al. 2021) through ``peft``: only the adapters train and are saved;
    ``frugalrl export RUN_DIR`` merges them into a full model."""

    r: int = Field(16, gt=0, description="Adapter rank; 16 is peft's and TRL's usual choice.")
    alpha: float = Field(32.0, gt=0, description="Scale alpha / r on the update; 2r as usual.")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout on the adapter input; 0: RL log-probs stay exact."
    )
    target_modules: list[str] | str = Field(
        "all-linear",
        description="Modules to adapt: 'all-linear' (every linear layer but the output layer) "
        "or a list of names such as [q_proj, v_proj].",
    )


class MonitorConfig(_Section):
    """One stability monitor (``frugalrl/monitors.py``) and what to do when it trips."""

    name: str = Field(
        description="accuracy_drop, truncation, language_drift, kl, entropy or nonfinite."
    )
    threshold: float | None = Field(
        None,
        description="accuracy_drop: largest allowed fall below the best accuracy (fraction); "
        "truncation, language_drift: largest allowed share of completions.",
    )
    low: float | None = Field(None, description="kl, entropy: smallest allowed window mean.")
    high: float | None = Field(None, description="kl, entropy: largest allowed window mean.")
    action: Literal["warn", "stop", "rollback"] = Field(
        "warn",
        description="warn: a console line; stop: save, report and exit (code 3); rollback: "
        "restore the best checkpoint (held-out accuracy), lower the learning rate, go on.",
    )

    @model_validator(mode="after")
    def _check_params(self) -> MonitorConfig:
        from frugalrl.monitors import MONITOR_PARAMS, MONITORS

        MONITORS.get(self.name)
        needs = MONITOR_PARAMS[self.name]
        if needs == "threshold" and self.threshold is None:
            raise ValueError(f"monitor '{self.name}' needs a threshold")
        if needs == "bounds" and self.low is None and self.high is None:
            raise ValueError(f"monitor '{self.name}' needs low and/or high")
        return self


def _default_monitors() -> list[MonitorConfig]:
    # A skipped NaN update and runaway lengths are worth a line on the console in any run.
    return [
        MonitorConfig(name="nonfinite", action="warn"),
        MonitorConfig(name="truncation", threshold=0.5, action="warn"),
    ]


class GuardsConfig(_Section):
    """Stability guards: monitors over the last ``window`` steps' metrics, each with an action
    (open-rs's runs degraded after ~150–200 steps with nothing to stop them)."""

    monitors: list[MonitorConfig] = Field(
        default_factory=_default_monitors,
        description="The monitors to run after every step; [] turns the guards off.",
    )
    window: int = Field(5, gt=0, description="Steps averaged by the moving-window monitors.")
    max_rollbacks: int = Field(
        2, ge=0, description="Rollbacks allowed; one more trip stops the run instead."
    )
    rollback_lr_factor: float = Field(
        0.5, gt=0, le=1, description="Learning rate multiplier at each rollback."
    )


class LoggingConfig(_Section):
    tensorboard: bool = True
    wandb: bool | None = Field(None, description="None: use wandb when installed and configured.")
    progress: bool = Field(True, description="Progress bars on the console.")


class Config(_Section):
    name: str = Field("run", description="Recipe name; also names the default run directory.")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    rollout: RolloutConfig = RolloutConfig()
    rewards: list[RewardConfig] = Field(default_factory=_default_rewards)
    scoring: ScoringConfig = ScoringConfig()
    algo: AlgoConfig = AlgoConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    guards: GuardsConfig = GuardsConfig()
    logging: LoggingConfig = LoggingConfig()
    peft: PeftConfig | None = Field(
        None, description="LoRA adapters instead of full fine-tuning (None: train every weight)."
    )

    @field_validator("rewards")
    @classmethod
    def _rewards_not_empty(cls, v: list[RewardConfig]) -> list[RewardConfig]:
        if not v:
            raise ValueError("at least one reward is needed")
        return v

    @model_validator(mode="after")
    def _rollback_needs_periodic_eval(self) -> Config:
        # (eval.path is checked when training starts: `frugalrl demo` fills it in)
        if self.rollback_guarded and not self.eval.every_steps:
            raise ValueError(
                "guards: a rollback restores the checkpoint with the best held-out accuracy; "
                "it needs eval.path and eval.every_steps > 0"
            )
        return self

    @model_validator(mode="after")
    def _mixed_precision_masters(self) -> Config:
        if self.train.precision == "bf16" and self.model.dtype not in ("auto", "float32"):
            raise ValueError(
                f"train.precision bf16 keeps fp32 master weights: model.dtype must be 'auto' or "
                f"'float32', not '{self.model.dtype}' (for pure {self.model.dtype} training set "
                "train.precision fp32)"
            )
        if self.train.lm_head_fp32 and self.train.precision != "bf16":
            raise ValueError("train.lm_head_fp32 only applies with train.precision bf16")
        return self

    @property
    def rollback_guarded(self) -> bool:
        return any(m.action == "rollback" for m in self.guards.monitors)

    @model_validator(mode="after")
    def _check_names(self) -> Config:
        # Registry names are checked here, so a typo fails before any model is loaded.
        from frugalrl.algo import ADVANTAGES, KL_ESTIMATORS, LOSS_AGGREGATIONS, checked_policy_loss
        from frugalrl.registry import check_params
        from frugalrl.rewards.compose import checked_reward
        from frugalrl.rollout import ROLLOUT_ENGINES

        check_params(
            ADVANTAGES.get(self.algo.advantage),
            self.algo.estimator_params,
            f"advantage estimator '{self.algo.advantage}'",
        )
        self.algo.check_loss_fields()
        checked_policy_loss(self.algo.policy_loss, self.algo.loss_params)
        if self.rollout.importance_sampling is not None:
            from frugalrl.algo.importance import IS_CORRECTIONS

            IS_CORRECTIONS.get(self.rollout.importance_sampling)
        LOSS_AGGREGATIONS.get(self.algo.loss_aggregation)
        KL_ESTIMATORS.get(self.algo.kl_estimator)
        ROLLOUT_ENGINES.get(self.rollout.engine)
        for reward in self.rewards:
            checked_reward(reward.name, reward.params)
            for step in reward.schedule:
                checked_reward(reward.name, reward.spec().at(step).params, f" at step {step}")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.train.output_dir.format(name=self.name))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def format_validation_error(
    err: ValidationError, source: str, root: type[BaseModel] | None = None
) -> str:
    """A pydantic error as one line naming ``source`` and the key (with the valid keys of its
    section for an unknown one); ``root`` is the validated model (default: the recipe)."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        parent = _section_at(first["loc"][:-1], root or Config)
        choices = f"; valid keys: {', '.join(parent.model_fields)}" if parent else ""
        return f"{source}: unknown key '{key}'{choices}"
    if first["type"] == "missing":
        return f"{source}: missing key '{key}'"
    if not first["loc"]:  # a check across sections: the whole recipe is no useful "value"
        return f"{source}: {first['msg'].removeprefix('Value error, ')}"
    value = repr(first.get("input"))
    value = value if len(value) <= 100 else f"{value[:100]}..."  # a 5 MB string: one short line
    return f"{source}: bad value for '{key}' ({value}): {first['msg']}"


def _section_at(loc: tuple, root: type[BaseModel]) -> type[BaseModel] | None:
    """The config class at a validation error's location, to list its valid keys."""
    cls = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        inner = getattr(ann, "__args__", (ann,))[0] if ann is not None else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            cls = ann
        elif isinstance(inner, type) and issubclass(inner, BaseModel):
            cls = inner
        else:
            return None
    return cls


def _parse_scalar(text: str) -> Any:
    """`--set` values are YAML scalars: 1e-6, true, null, [1, 2] all mean what YAML says."""
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: an int over 4300 digits
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides to a raw recipe dict (list items by index: rewards.0.weight)."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got '{item}'")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        if not all(parts):
            raise UserError(f"--set {item}: empty key in '{dotted}'")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict | list):
                raise UserError(f"--set {dotted}: '{'.'.join(parts[:i])}' is not a section")
            if isinstance(node, list):
                node = node[_list_index(part, node, dotted)]
            else:
                if not isinstance(node.setdefault(part, {}), dict | list):
                    raise UserError(
                        f"--set {dotted}: '{'.'.join(parts[: i + 1])}' is not a section"
                    )
                node = node[part]
        last = parts[-1]
        if not isinstance(node, dict | list):
            raise UserError(f"--set {dotted}: '{'.'.join(parts[:-1])}' is not a section")
        if isinstance(node, list):
            node[_list_index(last, node, dotted)] = _parse_scalar(raw)
        else:
            node[last] = _parse_scalar(raw)
    return data


def _list_index(part: str, node: list, dotted: str) -> int:
    if not part.isdecimal() or int(part) >= len(node):
        raise UserError(f"--set {dotted}: '{part}' is not an index of a list of {len(node)}")
    return int(part)


def _one_line(text: str) -> str:
    """``text`` with its line breaks escaped: a key or value may hold one, the error may not."""
    return "".join(repr(c)[1:-1] if c in _LINE_BREAKS else c for c in text)


_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")  # str.splitlines'


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise UserError(_one_line(format_validation_error(err, source))) from None
    except UserError as err:  # an unknown name, found by a validator: say where it came from
        raise UserError(_one_line(f"{source}: {err}")) from None


def read_yaml_mapping(path: Path, what: str = "recipe") -> dict[str, Any]:
    """A YAML file's top-level mapping; anything else is a one-line UserError saying where."""
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start + 1})") from None
    except yaml.MarkedYAMLError as err:  # one line: where, and what (YAML's own text has several)
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = " ".join(str(err.problem or err.context or err.__class__.__name__).split())
        raise UserError(f"{where}: not valid YAML ({what})") from None
    except (yaml.YAMLError, ValueError, RecursionError) as err:  # ValueError: huge int literal
        what = " ".join(str(err).split())[:200]
        raise UserError(f"{path}: not valid YAML ({err.__class__.__name__}: {what})") from None
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: a {what} must be a mapping of sections, got {type(data).__name__}"
        )
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe, apply ``--set`` overrides, validate. Errors are one-line UserErrors."""
    path = Path(path)
    data = read_yaml_mapping(path)
    try:
        data = apply_overrides(data, overrides or [])
    except UserError as err:
        raise UserError(_one_line(str(err))) from None
    return config_from_dict(data, source=str(path))
