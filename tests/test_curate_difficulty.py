"""The difficulty stage: pass rates from k samples, the band kept, the cache (no regeneration)."""

import json

import pytest

from frugalrl.curate import CurateConfig, curate
from frugalrl.curate import difficulty as difficulty_module
from frugalrl.curate.config import DifficultyConfig
from frugalrl.curate.difficulty import difficulty, read_cache
from frugalrl.curate.stage import StageContext
from frugalrl.rollout import Completion, HFEngine

ROWS = [{"id": f"r{i}", "problem": f"What is {i} + 0?", "answer": str(i)} for i in range(1, 5)]
CORRECT = {"1": 0, "2": 1, "3": 3, "4": 4}  # correct samples out of 4, by gold answer


class ScriptedEngine:
    """Answers prompt i with CORRECT[answer] right boxed answers out of n, counting calls."""

    def __init__(self, answers):
        self.answers, self.calls = answers, 0

    def generate(self, prompt_ids, n, params):
        self.calls += 1
        out = []
        for _ in prompt_ids:
            answer = self.answers.pop(0)
            texts = [f"\\boxed{{{answer if j < CORRECT[answer] else 999}}}" for j in range(n)]
            out.append([Completion((), t, True) for t in texts])
        return out


@pytest.fixture
def scripted(monkeypatch, tiny_model_dir):
    from transformers import AutoTokenizer

    engines = []

    def build(config):
        engines.append(ScriptedEngine([r["answer"] for r in ROWS]))
        return engines[-1], AutoTokenizer.from_pretrained(tiny_model_dir)

    monkeypatch.setattr(difficulty_module, "build_engine", build)
    return engines


def test_band_and_histogram_from_scripted_pass_rates(tmp_path, scripted):
    config = DifficultyConfig(
        model="m", samples=4, keep_min=0.1, keep_max=0.9, bins=4, prompt_template="plain"
    )
    result = difficulty(ROWS, config, StageContext(tmp_path, progress=False))
    assert [(r["id"], r["pass_rate"]) for r in result.kept] == [("r2", 0.25), ("r3", 0.75)]
    assert [(d.row["id"], d.reason) for d in result.dropped] == [
        ("r1", "too hard"),
        ("r4", "too easy"),
    ]
    assert result.stats["histogram"]["counts"] == [1, 1, 0, 2]  # 0 | .25 | - | .75, 1.0
    assert result.stats["mean pass rate"] == pytest.approx(0.5)
    assert result.stats["generated"] == 4 and scripted[0].calls == 1


def test_cached_rerun_does_not_generate_and_the_report_has_a_histogram(tmp_path, scripted):
    config = CurateConfig.model_validate(
        {
            "progress": False,
            "stages": ["load", "difficulty"],
            "load": {"sources": [{"path": str(tmp_path / "d.jsonl"), "solution_field": None}]},
            "difficulty": {
                "model": "m",
                "samples": 4,
                "keep_max": 0.9,
                "chunk_problems": 2,
                "prompt_template": "plain",
            },
        }
    )
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    first = curate(config, tmp_path / "out")
    assert len(scripted) == 1 and scripted[0].calls == 2  # 4 problems, 2 per generate call
    cache = read_cache(tmp_path / "out" / "difficulty_cache.jsonl")
    assert sorted(r["correct"] for r in cache.values()) == [0, 1, 3, 4]
    second = curate(config, tmp_path / "out")
    assert len(scripted) == 1  # no engine built: every pass rate came from the cache
    assert first["stages"][1]["dropped_by_reason"] == {"too easy": 1}
    assert second["stages"][1]["stats"]["from cache"] == 4
    assert second["stages"][1]["rows_out"] == first["stages"][1]["rows_out"] == 3
    assert (tmp_path / "out" / "difficulty.png").read_bytes()[:4] == b"\x89PNG"
    assert (
        "![estimated difficulty](difficulty.png)"
        in (tmp_path / "out" / "curation_report.md").read_text()
    )
    changed = config.model_copy(deep=True)
    changed.difficulty.temperature = 0.5  # another sampling setting: another cache key
    curate(changed, tmp_path / "out")
    assert len(scripted) == 2


def test_tiny_model_end_to_end_with_generate_counted(tmp_path, tiny_model_dir, monkeypatch):
    calls = []
    real = HFEngine.generate

    def counting(self, prompt_ids, n, params):
        calls.append(len(prompt_ids))
        return real(self, prompt_ids, n, params)

    monkeypatch.setattr(HFEngine, "generate", counting)
    config = DifficultyConfig(
        model=str(tiny_model_dir),
        samples=2,
        max_new_tokens=6,
        prompt_template="plain",
        device="cpu",
        dtype="float32",
        limit=3,
    )
    context = StageContext(tmp_path, progress=False)
    result = difficulty(ROWS, config, context)
    assert calls == [3]  # the 3 estimated problems in one call; the 4th passes unestimated
    assert [r["pass_rate"] is None for r in result.kept][-1]
    assert all(
        r["pass_rate"] in (0.0, 0.5, 1.0) for r in result.kept[:3] + [d.row for d in result.dropped]
    )
    difficulty(ROWS, config, context)
    assert calls == [3]  # the re-run read the cache
