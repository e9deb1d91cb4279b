"""The curate-demo config: the demo's RL problems split into hard/easy bands by the base's pass
rate, and open-rs's two training sets (hard only; hard + easy 6:1) of the same size."""

import json
from importlib.resources import files

import pytest

from frugalrl.curate import difficulty as difficulty_module
from frugalrl.curate import load_curate_config, run_curation
from frugalrl.curate.config import MixConfig
from frugalrl.curate.difficulty import band_of
from frugalrl.curate.mix import mix
from frugalrl.curate.stage import StageContext
from frugalrl.demo.task import make_split
from frugalrl.errors import UserError
from frugalrl.rollout import Completion

CONFIG = files("frugalrl").joinpath("recipes", "curate-demo.yaml")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """36 distinct demo problems; problem i is answered right ``i % 9`` times out of 8, so each
    count 0..8 occurs 4 times: 16 hard (0-3 of 8), 8 in no band (4-5), 12 easy (6-8)."""
    seen, rows = set(), []
    for row in make_split("train", 200, 7):
        if row["problem"] not in seen:
            seen.add(row["problem"])
            rows.append(row)
    rows = rows[:36]
    assert len(rows) == 36
    path = tmp_path_factory.mktemp("demo") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, {r["problem"]: i % 9 for i, r in enumerate(rows)}, rows


@pytest.fixture
def scripted(monkeypatch, tiny_model_dir, sample):
    """The base model replaced by a script: problems in order, ``correct`` right answers of n."""
    from transformers import AutoTokenizer

    _, correct, rows = sample
    calls = []

    class Engine:
        def __init__(self):
            self.queue = [r["problem"] for r in rows]

        def generate(self, prompt_ids, n, params):
            calls.append(len(prompt_ids))
            out = []
            for _ in prompt_ids:
                problem = self.queue.pop(0)
                answer = next(r["answer"] for r in rows if r["problem"] == problem)
                k = correct[problem]
                texts = [f"\\boxed{{{answer if j < k else 99}}}" for j in range(n)]
                out.append([Completion((), t, True) for t in texts])
            return out

    def build(config):
        return Engine(), AutoTokenizer.from_pretrained(tiny_model_dir)

    monkeypatch.setattr(difficulty_module, "build_engine", build)
    return calls


def test_the_config_says_what_the_recipes_document():
    config = load_curate_config(CONFIG)
    assert config.stages == ["load", "difficulty", "mix"]
    d = config.difficulty
    assert (d.samples, d.prompt_template, d.temperature, d.max_new_tokens) == (8, "demo", 1.0, 256)
    assert d.bands == {"hard": (0.0, 0.375), "easy": (0.75, 1.0)}
    m = config.mix
    assert m.total == 1400 and m.select == "exp2-mix"
    weights = {name: {p.name: p.weight for p in parts} for name, parts in m.sets.items()}
    assert weights == {"exp1-hard": {"hard": 1}, "exp2-mix": {"hard": 6, "easy": 1}}
    # open-rs's 6,000 hard + 1,000 easy, scaled to 1,400: 1,200 + 200
    assert [p.weight * m.total / 7 for p in m.sets["exp2-mix"]] == [1200, 200]


def test_two_sets_of_one_size_differ_only_in_composition(tmp_path, sample, scripted):
    path, correct, _ = sample
    common = [
        f"load.sources.0.path={path}",
        "difficulty.model=scripted",
        f"difficulty.cache_path={tmp_path / 'cache.jsonl'}",
        "mix.total=14",  # 1,400 scaled down to the sample: 14 hard, or 12 hard + 2 easy
        "progress=false",
    ]
    sets = {}
    for name in ("exp1-hard", "exp2-mix"):
        summary = run_curation(CONFIG, [*common, f"mix.select={name}"], tmp_path / name)
        stages = {s["stage"]: s for s in summary["stages"]}
        assert stages["difficulty"]["stats"]["bands"] == {"hard": 16, "easy": 12, "none": 8}
        assert stages["mix"]["stats"]["set"] == name
        sets[name] = [json.loads(line) for line in (tmp_path / name / "data.jsonl").open()]
    assert scripted == [36]  # one generate call: the second run read the shared cache

    def composition(rows):
        return {part: sum(r["mix_source"] == part for r in rows) for part in {"hard", "easy"}}

    assert composition(sets["exp1-hard"]) == {"hard": 14, "easy": 0}
    assert composition(sets["exp2-mix"]) == {"hard": 12, "easy": 2}
    for rows in sets.values():
        assert len({r["problem"] for r in rows}) == 14
        for r in rows:
            assert r["pass_rate"] == correct[r["problem"]] / 8
            assert r["difficulty_band"] == r["mix_source"]
            assert (
                (correct[r["problem"]] <= 3)
                if r["mix_source"] == "hard"
                else (correct[r["problem"]] >= 6)
            )


def test_bands_and_set_selection_edges(tmp_path):
    bands = {"hard": (0.0, 0.375), "easy": (0.75, 1.0)}
    assert [band_of(r, bands) for r in (0.0, 0.375, 0.5, 0.75, 1.0, None)] == [
        "hard",
        "hard",
        None,
        "easy",
        "easy",
        None,
    ]
    rows = [{"problem": str(i), "answer": "1", "level": "a" if i < 3 else "b"} for i in range(5)]
    ctx = StageContext(tmp_path, progress=False)
    sets = {
        "x": [{"name": "a", "where": {"level": "a"}}],
        "y": [{"name": "b", "where": {"level": "b"}}],
    }
    assert len(mix(rows, MixConfig(sets=sets, select="y"), ctx).kept) == 2
    with pytest.raises(UserError, match="not one of mix.sets"):
        mix(rows, MixConfig(sets=sets, select="z"), ctx)
    with pytest.raises(UserError, match="mix.select"):
        mix(rows, MixConfig(sets=sets), ctx)  # no sources and nothing selected
    both = MixConfig(sets=sets, select="x", sources=[{"name": "a"}])
    with pytest.raises(UserError, match="not both"):
        mix(rows, both, ctx)
    with pytest.raises(UserError, match="0 <= min <= max <= 1"):
        load_curate_config(CONFIG, ["difficulty.bands.hard=[0.5, 0.2]"])
