"""The DeepSpeed config frugalrl builds from a launch's (no processes: the pure parts)."""

import json

import pytest
import torch

from frugalrl.errors import UserError
from frugalrl.train.deepspeed_zero import (
    STALE_BUILD_LOCK_S,
    check_build_locks,
    engine_config,
    launch_config,
    launched_zero_stage,
)
from frugalrl.train.distributed import DataParallel

pytest.importorskip("deepspeed")


def test_engine_config_keeps_zero_section_and_takes_the_recipes_settings():
    launched = {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": 4,
        "gradient_clipping": 5.0,
        "bf16": {"enabled": "auto"},
        "zero_optimization": {
            "stage": 3,
            "offload_param": {"device": "cpu"},
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
        },
    }
    config = engine_config(launched, max_grad_norm=0.2, dtype=torch.bfloat16)
    assert config["zero_optimization"] == {"stage": 3, "offload_param": {"device": "cpu"}}
    assert config["gradient_clipping"] == 0.2  # the recipe's optim.max_grad_norm
    assert config["gradient_accumulation_steps"] == 1  # the loop sets the boundary itself
    assert config["train_micro_batch_size_per_gpu"] == 1 and "train_batch_size" not in config
    assert config["bf16"] == {"enabled": True, "check_grad_overflow": True}
    fp32 = engine_config(launched, max_grad_norm=1.0, dtype=torch.float32)
    assert "bf16" not in fp32 and "fp16" not in fp32


@pytest.mark.parametrize("key", ["optimizer", "scheduler"])
def test_a_deepspeed_json_with_its_own_optimizer_or_scheduler_is_refused(key):
    launched = {"zero_optimization": {"stage": 2}, key: {"type": "AdamW", "params": {}}}
    with pytest.raises(UserError, match=f"sets '{key}': remove it, the recipe's optim:"):
        engine_config(launched, 1.0, torch.float32)


def test_the_launch_is_read_through_accelerates_plugin(tmp_path, monkeypatch):
    """What `accelerate launch` sets for a YAML config, and for a DeepSpeed JSON file."""
    assert launched_zero_stage() == 0  # not a DeepSpeed launch
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert launched_zero_stage() == 3
    ds_json = tmp_path / "ds.json"
    ds_json.write_text(json.dumps({"zero_optimization": {"stage": 2, "overlap_comm": True}}))
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(ds_json))
    assert launched_zero_stage() == 2
    assert launch_config()["zero_optimization"]["overlap_comm"] is True
    ds_json.write_text("{not json")
    with pytest.raises(UserError, match="the launch's DeepSpeed config"):
        launch_config()


def test_one_process_launched_with_deepspeed_trains_without_it(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.warns(UserWarning, match="one process: nothing to partition"):
        dp = DataParallel.from_environment(torch.device("cpu"))
    assert dp.zero_stage == 0 and dp.sharding is None


def test_a_stale_torch_extension_build_lock_is_one_line_not_a_hang(tmp_path, monkeypatch):
    """torch waits forever on ``<op>/lock``; a fresh one is a build running elsewhere (wait), an
    old one was left by a killed build (refuse, naming the file)."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = tmp_path / "py311_cpu" / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True)
    check_build_locks()  # no lock
    lock.touch()
    made = lock.stat().st_mtime
    check_build_locks(now=made + STALE_BUILD_LOCK_S - 1)
    with pytest.raises(UserError) as e:
        check_build_locks(now=made + STALE_BUILD_LOCK_S + 60)
    assert str(lock) in str(e.value) and "\n" not in str(e.value) and "11 min" in str(e.value)
