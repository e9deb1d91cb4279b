"""Data-parallel training: N processes (gloo, this CPU) end where one process ends.

Each multi-process run is a real launch (``accelerate launch`` with the shipped CPU config, or
``frugalrl train --num-processes``) in subprocesses; the one-process reference runs in-process.
"""

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from ports import free_port
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from frugalrl.config import load_config
from frugalrl.errors import UserError
from frugalrl.rollout import SamplingParams
from frugalrl.rollout.hf import HFEngine, sample_next
from frugalrl.train import loop
from frugalrl.train.distributed import DataParallel, balanced_shares
from frugalrl.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "accelerate_configs"
CPU_CONFIG = CONFIGS / "cpu-gloo.yaml"
# Rewards with spread on an untrained model, so that advantages are not all 0.
REWARDS = [
    {"name": "accuracy", "weight": 1.0},
    {"name": "reward_fixtures:distinct_characters", "weight": 1.0},
    {"name": "overlong", "weight": 1.0, "max_len": 16, "cache_len": 16},
]
# Seconds, throughput and how the work was cut into micro-batches differ by design.
# how the work was cut up differs with the number of processes, not what it computed
NOT_COMPARED = ("time/", "throughput/", "train/micro_batches", "train/padding_fraction")


@pytest.fixture(scope="module", autouse=True)
def private_torch_extensions(tmp_path_factory):
    """The launched DeepSpeed processes JIT-build their CPU ops in a directory of this module's
    own (one ~20 s build): a build lock some killed process left in the shared cache cannot
    hang them (the launch refuses a stale lock, ``test_deepspeed_zero.py``)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path_factory.mktemp("torch_extensions")))
    yield
    patch.undo()


def write_recipe(tmp_path, tiny_model_dir, task_files, rewards=REWARDS) -> Path:
    recipe = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    recipe["model"]["name_or_path"] = str(tiny_model_dir)
    recipe["data"]["path"] = str(task_files[0])
    recipe["rewards"] = rewards
    recipe["rollout"].update(num_generations=4, max_completion_tokens=16)
    recipe["train"].update(steps=5, prompts_per_step=4, micro_batch_size=4, save_every=0, threads=1)
    recipe["optim"]["lr"] = 1e-3
    recipe["eval"] = {"before": False, "after": False}
    recipe["logging"] = {"progress": False, "tensorboard": True}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_one_process(recipe: Path, out: Path, overrides: list[str]) -> None:
    loop.train(load_config(recipe, [*overrides, f"train.output_dir={out}"]))


def launch_env() -> dict[str, str]:
    """The tests' reward module importable in the launched processes, and a Python traceback
    from a process that dies of a signal (an abort in a collective says where it was)."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "tests"),
        "PYTHONWARNINGS": "ignore",
        "PYTHONFAULTHANDLER": "1",
    }


def ranks_output(stderr: str) -> str:
    """What a failed launch's processes printed, without the launcher's own traceback (which
    fills the end of stderr and says only which rank died, and by what signal)."""
    launcher = stderr.rfind("Traceback (most recent call last)")
    if launcher > 0 and "distributed.elastic" in stderr[launcher:]:
        return stderr[:launcher][-6000:] + "\n[launcher]\n" + stderr[-1200:]
    return stderr[-6000:]


def launched(command: list[str], env: dict[str, str] | None = None, exit_code: int = 0):
    """Run a launch command to the end (its processes' own errors shown if it fails)."""
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env=env or launch_env(),
        check=False,
    )
    assert done.returncode == exit_code, ranks_output(done.stderr)
    return done


def run_launched(command: list[str], out: Path, overrides: list[str], exit_code: int = 0) -> str:
    """Run a launch command to the end; its standard output."""
    sets = [f"--set={o}" for o in [*overrides, f"train.output_dir={out}"]]
    return launched([*command, *sets], exit_code=exit_code).stdout


def weights(run: Path) -> dict[str, torch.Tensor]:
    final = run / "final"
    name = "adapter_model" if (final / "adapter_model.safetensors").exists() else "model"
    return load_file(final / f"{name}.safetensors")


def assert_same_run(one: Path, many: Path, steps=(1, 2, 3, 4, 5)) -> None:
    a, b = weights(one), weights(many)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    ma, mb = read_metrics(one / "metrics.jsonl"), read_metrics(many / "metrics.jsonl")
    assert [r["step"] for r in mb] == list(steps)  # one writer: each step logged once
    for ra, rb in zip(ma, mb, strict=True):
        assert ra.keys() == rb.keys()
        for key, x in ra.items():
            if key.startswith(NOT_COMPARED):
                continue
            x, y = (math.nan if v is None else v for v in (x, rb[key]))  # NaN is logged as null
            assert (math.isnan(x) and math.isnan(y)) or math.isclose(
                x, y, rel_tol=1e-4, abs_tol=1e-6
            ), (ra["step"], key, x, y)


def died_after_step_4(run: Path) -> None:
    """Make a finished 5-step run look like one that died after saving step 4: its last
    checkpoint, final weights and step-5 metrics row are lost."""
    shutil.rmtree(run / "checkpoints" / "step-000005")
    shutil.rmtree(run / "final")
    metrics = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(metrics[:4]))


def accelerate_launch(config: Path, processes: int = 2) -> list[str]:
    """``accelerate launch`` with a shipped config, on a free port (the configs leave it to
    accelerate's default, which a previous test's processes may still hold)."""
    return [
        *(sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)),
        *(f"--num_processes={processes}", f"--main_process_port={free_port()}"),
        *("-m", "frugalrl", "train"),
    ]


def test_two_gloo_processes_end_where_one_ends(tmp_path, tiny_model_dir, task_files):
    """GRPO with the KL in the loss (reference model), IS correction, 2 processes through
    `accelerate launch` and the shipped CPU config."""
    recipe = write_recipe(tmp_path, tiny_model_dir, task_files)
    overrides = ["rollout.importance_sampling=token_truncate"]
    run_one_process(recipe, tmp_path / "one", overrides)
    run_launched([*accelerate_launch(CPU_CONFIG), str(recipe)], tmp_path / "two", overrides)
    assert_same_run(tmp_path / "one", tmp_path / "two")
    rows = read_metrics(tmp_path / "one" / "metrics.jsonl")
    assert all(r["reward/total/std"] > 0 for r in rows)  # something to learn
    assert all(r["train/grad_norm"] > 0 for r in rows)
    run = tmp_path / "two"
    assert len(list((run / "tensorboard").iterdir())) == 1  # the main process logs
    assert (run / "report.md").is_file() and (run / "summary.json").is_file()


def test_num_processes_with_dynamic_sampling_kl_reward_lora(tmp_path, tiny_model_dir, task_files):
    """`frugalrl train --num-processes 2`: dynamic sampling (rounds of uneven size), KL in the
    reward (log-probs computed per share and gathered), μ = 2, token-budget micro-batches,
    5 prompts (shares of 3 and 2) and LoRA adapters. Length rewards only: on an untrained
    policy most groups score all alike, so dynamic sampling drops groups and draws again."""
    recipe = write_recipe(tmp_path, tiny_model_dir, task_files, REWARDS[::2])
    overrides = [
        "algo.dynamic_sampling=true",
        "algo.kl_in_reward=true",
        "algo.num_iterations=2",
        "train.micro_batch_tokens=64",
        "train.prompts_per_step=5",
        "peft.r=4",
        "peft.alpha=8",
    ]
    run_one_process(recipe, tmp_path / "one", overrides)
    command = [sys.executable, "-m", "frugalrl", "train", str(recipe), "--num-processes", "2"]
    stdout = run_launched(command, tmp_path / "two", overrides)
    assert stdout.count("report:") == 1  # only the main process prints the summary
    assert_same_run(tmp_path / "one", tmp_path / "two")
    rows = read_metrics(tmp_path / "one" / "metrics.jsonl")
    assert sum(r["train/dynamic_sampling_dropped_groups"] for r in rows) > 0


def test_two_processes_sampling_ahead_end_where_one_ends(tmp_path, tiny_model_dir, task_files):
    """rollout.max_staleness 1: each process queues its share of the next step's prompts on its
    own sampling process (hf-process); the groups are gathered when the step takes them. Two
    processes train the batches one process trains."""
    recipe = write_recipe(tmp_path, tiny_model_dir, task_files)
    overrides = [
        "rollout.engine=hf-process",
        "rollout.max_staleness=1",
        "rollout.importance_sampling=token_truncate",
        "train.prompts_per_step=3",  # shares of 2 and 1
    ]
    run_one_process(recipe, tmp_path / "one", overrides)
    run_launched([*accelerate_launch(CPU_CONFIG), str(recipe)], tmp_path / "two", overrides)
    assert_same_run(tmp_path / "one", tmp_path / "two")
    rows = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["rollout/staleness"] for r in rows] == [0, 1, 1, 1, 1]


def test_sharded_fsdp_run_ends_where_one_process_ends_and_resumes(
    tmp_path, tiny_model_dir, task_files
):
    """FSDP2 (the shipped ZeRO-3 config) over 2 gloo processes, μ = 2 and the KL in the
    reward (forward passes with gathered weights), token-budget micro-batches (padded to the
    same count on both processes); then a crash after the step-4 checkpoint, resumed with the
    ZeRO-2 config, ends the same too (the gathered optimizer state round-trips)."""
    recipe = write_recipe(tmp_path, tiny_model_dir, task_files)
    overrides = [
        "algo.kl_in_reward=true",
        "algo.num_iterations=2",
        "train.micro_batch_tokens=64",
        "train.prompts_per_step=5",
        "train.save_every=2",
    ]
    run_one_process(recipe, tmp_path / "one", overrides)
    run = tmp_path / "fsdp"
    run_launched([*accelerate_launch(CONFIGS / "fsdp-zero3.yaml"), str(recipe)], run, overrides)
    assert_same_run(tmp_path / "one", run)
    assert AutoModelForCausalLM.from_pretrained(run / "final").num_parameters() > 0

    died_after_step_4(run)
    resume = [*accelerate_launch(CONFIGS / "fsdp-zero2.yaml"), "--resume", str(run)]
    launched(resume)
    assert_same_run(tmp_path / "one", run)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_run_ends_where_one_process_ends_and_resumes(
    stage, tmp_path, tiny_model_dir, task_files
):
    """DeepSpeed ZeRO-2 / ZeRO-3 (the shipped configs) over 2 gloo processes: the engine takes
    the backward passes (its accumulation boundary after each step's last micro-batch, padded to
    the same count on both processes) and the clipped AdamW steps on partitions; μ = 2 and
    token-budget micro-batches. Then a crash after the step-4 checkpoint, resumed with the same
    config, ends the same too (each process's optimizer partition round-trips)."""
    pytest.importorskip("deepspeed")
    recipe = write_recipe(tmp_path, tiny_model_dir, task_files)
    overrides = [
        "algo.num_iterations=2",
        "train.micro_batch_tokens=64",
        "train.prompts_per_step=5",
        "train.save_every=2",
        "optim.max_grad_norm=0.3",  # clipping does happen (grad norms reach ~0.5 here)
    ]
    run_one_process(recipe, tmp_path / "one", overrides)
    config = CONFIGS / f"deepspeed-zero{stage}.yaml"
    run = tmp_path / "zero"
    run_launched([*accelerate_launch(config), str(recipe)], run, overrides)
    assert_same_run(tmp_path / "one", run)
    rows = read_metrics(tmp_path / "one" / "metrics.jsonl")
    assert max(r["train/grad_norm"] for r in rows) > 0.3
    assert AutoModelForCausalLM.from_pretrained(run / "final").num_parameters() > 0

    died_after_step_4(run)
    resume = [*accelerate_launch(config), "--resume", str(run)]
    launched(resume)
    assert_same_run(tmp_path / "one", run)


@pytest.mark.parametrize("launch", ["fsdp-zero3", "deepspeed-zero2"])
def test_bf16_sharded_runs_train_as_one_process_does(launch, tmp_path, tiny_model_dir, task_files):
    """train.precision bf16 under FSDP2 and DeepSpeed ZeRO-2: fp32 masters sharded or
    partitioned, bf16 autocast forwards on each process. bf16 rounds differently for other
    micro-batch shapes, so the runs are not equal bit for bit (and AdamW turns the smallest
    gradient differences into lr-sized steps): the first step, from the same weights, must
    sample the same completions and reach the same gradient norm to bf16 rounding."""
    if launch.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    recipe = write_recipe(tmp_path, tiny_model_dir, task_files)
    overrides = ["train.precision=bf16", "train.micro_batch_tokens=64", "train.steps=2"]
    run_one_process(recipe, tmp_path / "one", overrides)
    run = tmp_path / launch
    run_launched([*accelerate_launch(CONFIGS / f"{launch}.yaml"), str(recipe)], run, overrides)
    assert {v.dtype for v in weights(run).values()} == {torch.float32}  # the masters
    (one, _), (many, _) = (read_metrics(r / "metrics.jsonl") for r in (tmp_path / "one", run))
    for key in ("completion/length_mean", "reward/total/mean"):
        assert many[key] == pytest.approx(one[key], rel=1e-6)
    assert one["train/grad_norm"] > 0.1
    assert many["train/grad_norm"] == pytest.approx(one["train/grad_norm"], rel=1e-3)
    assert many["train/rollout_logprob_abs_diff"] > 1e-6  # bf16 sampling: a measured gap


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_rollback_ends_where_one_process_ends(
    stage, tmp_path, tiny_model_dir, task_files
):
    """A guard's rollback under DeepSpeed: the best checkpoint's weights written back into the
    engine's (ZeRO-3: partitioned) weights and each process's optimizer partition reloaded.
    KL above 1e-12 trips from step 2 on; the best checkpoint is the starting policy's (held-out
    evaluation every step); one rollback at half the learning rate, then the run stops at step
    4 (test_guards.py has this scenario in one process), on 2 processes as on one."""
    pytest.importorskip("deepspeed")
    recipe = write_recipe(tmp_path, tiny_model_dir, task_files)
    overrides = [
        f"eval.path={task_files[1]}",
        "eval.every_steps=1",
        "eval.every_num_problems=4",
        "guards.max_rollbacks=1",
        "guards.window=1",
        "guards.monitors=[{name: kl, high: 1.0e-12, action: rollback}]",
    ]
    run_one_process(recipe, tmp_path / "one", overrides)
    run = tmp_path / "zero"
    config = CONFIGS / f"deepspeed-zero{stage}.yaml"
    # the guard's stop exits 3 in each process; the launcher reports that as its own exit 1
    run_launched([*accelerate_launch(config), str(recipe)], run, overrides, exit_code=1)
    assert_same_run(tmp_path / "one", run, steps=(0, 1, 2, 3, 4))
    rows = read_metrics(run / "metrics.jsonl")
    assert [r.get("guards/rollbacks") for r in rows[1:]] == [0, 1, 1, 1]


def test_a_stale_build_lock_stops_a_deepspeed_launch_in_one_line(
    tmp_path, tiny_model_dir, task_files
):
    """A build lock a killed process left where DeepSpeed builds its ops: the launch stops at
    once, naming the file, where it used to wait on it forever."""
    pytest.importorskip("deepspeed")
    lock = tmp_path / "extensions" / "py311_cpu" / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    os.utime(lock, (lock.stat().st_mtime - 7200,) * 2)
    recipe = write_recipe(tmp_path, tiny_model_dir, task_files)
    command = [*accelerate_launch(CONFIGS / "deepspeed-zero2.yaml"), str(recipe)]
    done = subprocess.run(
        [*command, f"--set=train.output_dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**launch_env(), "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions")},
        check=False,
    )
    assert done.returncode != 0
    assert f"frugalrl: error: {lock}: a torch extension build lock 120 min old" in done.stderr, (
        done.stderr[-3000:]
    )


NAN_AT_STEP_2 = """
import math, os
from frugalrl.train import update

_update, _loss, _calls = update.policy_update, update.PolicyObjective.__call__, []

def policy_update(*args, **kwargs):
    _calls.append(1)
    return _update(*args, **kwargs)

def objective_call(*args, **kwargs):
    out = _loss(*args, **kwargs)
    if len(_calls) == 2 and os.environ.get("RANK") == "1":
        out.loss = out.loss * math.nan
    return out

update.policy_update, update.PolicyObjective.__call__ = policy_update, objective_call
"""


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_skips_a_nonfinite_update(stage, tmp_path, tiny_model_dir, task_files):
    """A NaN loss on one process at step 2 poisons the reduced gradient: DeepSpeed skips that
    update on every process (weights after step 2 = after step 1), train/nonfinite_updates
    says so, and training goes on with finite weights."""
    pytest.importorskip("deepspeed")
    recipe = write_recipe(tmp_path, tiny_model_dir, task_files)
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "sitecustomize.py").write_text(NAN_AT_STEP_2)  # run by every launched process
    overrides = ["train.steps=4", "train.save_every=1", "train.save_total_limit=4"]
    overrides.append("algo.entropy_coef=0.05")  # a gradient every step, whatever the rewards
    run = tmp_path / "zero"
    command = [*accelerate_launch(CONFIGS / f"deepspeed-zero{stage}.yaml"), str(recipe)]
    sets = [f"--set={o}" for o in [*overrides, f"train.output_dir={run}"]]
    env = {**launch_env(), "PYTHONPATH": f"{patches}{os.pathsep}{ROOT / 'tests'}"}
    launched([*command, *sets], env=env)
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["train/nonfinite_updates"] for r in rows] == [0, 1, 0, 0]
    ckpt = run / "checkpoints"
    one, two, four = (load_file(ckpt / f"step-00000{n}" / "model.safetensors") for n in (1, 2, 4))
    for name in one:
        torch.testing.assert_close(one[name], two[name], rtol=0, atol=0)
        assert torch.isfinite(four[name]).all() and not torch.equal(four[name], two[name])


def test_lora_with_sharding_and_other_zero_stages_are_refused(
    tmp_path, tiny_model_dir, task_files, monkeypatch
):
    recipe = write_recipe(tmp_path, tiny_model_dir, task_files)
    command = [*accelerate_launch(CONFIGS / "fsdp-zero3.yaml"), str(recipe), "--set=peft.r=4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=launch_env())
    assert done.returncode != 0
    assert "peft (LoRA) with FSDP is not supported" in done.stderr
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "1")
    with pytest.raises(UserError, match="DeepSpeed ZeRO stage 1: frugalrl runs stage 2 or 3"):
        DataParallel.from_environment(torch.device("cpu"))


def test_seeded_groups_do_not_depend_on_their_batch(tiny_model_dir):
    """A group's samples are a function of its seed: alone, or in a batch with others, or in
    a batch split into several generate calls, the same tokens."""
    from frugalrl.policy import load_policy

    model, tokenizer = load_policy(tiny_model_dir, "float32", torch.device("cpu"))
    params = SamplingParams(1.0, 1.0, 12)
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [5]]
    seeds = [11, 22, 33, 44]
    together = HFEngine(model, tokenizer, batch_size=64).generate(prompts, 3, params, seeds)
    one_per_call = HFEngine(model, tokenizer, batch_size=3).generate(prompts, 3, params, seeds)
    alone = HFEngine(model, tokenizer).generate(prompts[2:3], 3, params, seeds[2:3])

    def tokens(groups):
        return [[c.token_ids for c in group] for group in groups]

    assert tokens(together) == tokens(one_per_call)
    assert tokens(together[2:3]) == tokens(alone)
    for a, b in zip(together[2], alone[0], strict=True):  # up to float noise of batch shapes
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs))
    other = HFEngine(model, tokenizer).generate(prompts[2:3], 3, params, [34])
    assert tokens(other) != tokens(alone)  # and the seed matters


def test_sampling_by_inverse_cdf():
    """With one uniform draw per row: the first token whose cumulative probability exceeds it;
    never a token of probability 0. Probabilities 0.1, 0, 0.6, 0.3: CDF 0.1, 0.1, 0.7, 1.0."""
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    logits = probs.log().expand(6, -1)
    u = torch.tensor([0.0, 0.05, 0.1, 0.69, 0.71, 0.999])
    token, logp = sample_next(logits, 1.0, 1.0, u)
    assert token.tolist() == [0, 0, 2, 2, 3, 3]
    torch.testing.assert_close(logp, probs[token].log())
    # top-p 0.6 keeps only token 2 (the most likely reaches 0.6 alone)
    token, logp = sample_next(logits, 1.0, 0.6, u)
    assert token.tolist() == [2] * 6 and torch.allclose(logp, torch.zeros(6))


def test_shares_cover_every_item_once():
    items = list(range(7))
    shares = [DataParallel(rank, 3).share(items) for rank in range(3)]
    assert shares == [[0, 1, 2], [3, 4], [5, 6]]
    assert DataParallel(1, 4).share([0, 1]) == [1] and DataParallel(3, 4).share([0, 1]) == []


def test_balanced_shares_by_tokens():
    # costliest first, each to the lighter process: row 1 (10) → 0, row 3 (9) → 1,
    # row 2 (8) → 1 (9 < 10), rows 0 (2), 5 (2), 4 (1) → 0 (10, 12, 14 all < 17)
    costs = [2, 10, 8, 9, 1, 2]
    assert balanced_shares(costs, range(6), 2) == [[0, 1, 4, 5], [2, 3]]
    assert balanced_shares(costs, [1, 3], 3) == [[1], [3], []]


@pytest.mark.parametrize("value", ["0", "-1"])
def test_num_processes_must_be_positive(value, capsys):
    from frugalrl.cli import main

    assert main(["train", "recipes/demo.yaml", "--num-processes", value]) == 2
    assert "--num-processes must be at least 1" in capsys.readouterr().err
