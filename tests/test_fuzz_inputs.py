"""Fuzzing the entry points with bad input (issue 9): recipes, data files, completions.

Every case must end in a one-line UserError naming the file (and line) or the key, or be
handled: no other exception, no hang, nothing written to a half-made run directory.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from frugalrl.cli import main
from frugalrl.config import Config, load_config
from frugalrl.curate.config import LoadConfig
from frugalrl.curate.load import load as curate_load
from frugalrl.curate.stage import StageContext
from frugalrl.data.dataset import load_problems
from frugalrl.errors import UserError
from frugalrl.eval.benchmarks import load_benchmark
from frugalrl.rewards import REWARDS
from frugalrl.rewards.compose import RewardSpec
from frugalrl.rewards.format import _OPEN_R1, _open_r1
from frugalrl.rewards.scoring import RewardScorer
from frugalrl.sample import Sample

RECIPES = Path(__file__).parent.parent / "src" / "frugalrl" / "recipes"


def fuzz(max_examples: int) -> settings:
    """Sized so that the whole file runs in under a minute on one core; no example database."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        # A fixed seed, so CI cannot turn red on a new random find; FRUGALRL_FUZZ_EXPLORE=1 explores.
        derandomize=not os.environ.get("FRUGALRL_FUZZ_EXPLORE"),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One directory per module: hypothesis re-runs a test many times, each example overwrites."""
    return tmp_path_factory.mktemp("fuzz")


def assert_one_line(err: UserError, *names: str) -> str:
    """The message is one line and names at least one of ``names`` (a file, a key)."""
    msg = str(err)
    assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
    assert any(name in msg for name in names), (names, msg)
    return msg


# ---- recipes ---------------------------------------------------------------------------------

SECTIONS = {
    name: list(getattr(field.annotation, "model_fields", {}))
    for name, field in Config.model_fields.items()
}
FIELD_NAMES = sorted({f for fields in SECTIONS.values() for f in fields} | {"weight", "schema"})
# no ":" in text values: "pkg.module:function" reward names would import arbitrary modules;
# the bad module names that matter are listed here instead.
REWARD_NAMES = [*REWARDS.names(), "nope", ":f", ".rel:f", "frugalrl.nope:f", "math:nope"]
text = st.text(st.characters(blacklist_characters=":", blacklist_categories=["Cs"]), max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    st.sampled_from(REWARD_NAMES + ["auto", "cpu", "runs/{name}", "runs/{x}", "{", "1e-3"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(FIELD_NAMES) | text, inner)
    ),
    max_leaves=8,
)
sections = st.dictionaries(st.sampled_from(FIELD_NAMES) | text, values, max_size=4)
reward_items = st.one_of(
    st.fixed_dictionaries(
        {"name": st.sampled_from(REWARD_NAMES)},
        optional={"weight": values, "schema": values, "extra": values},
    ),
    values,
)
recipes = st.dictionaries(
    st.sampled_from(list(SECTIONS)) | text,
    st.one_of(sections, values, st.lists(reward_items, max_size=3)),
    max_size=5,
)
SHIPPED = {
    p.name: yaml.safe_load(p.read_text())
    for p in sorted(RECIPES.glob("*.yaml"))
    if not p.name.startswith("curate-")
}


def leaf_paths(node, prefix=()):
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from leaf_paths(v, (*prefix, k))
    elif isinstance(node, list) and node:
        for i, v in enumerate(node):
            yield from leaf_paths(v, (*prefix, i))
    else:
        yield prefix


@st.composite
def mutated_shipped_recipes(draw):
    """A shipped recipe with a few leaves replaced by anything, deleted, or given a sibling."""
    data = json.loads(json.dumps(SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))]))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in leaf_paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "unknown key", "drop section"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "unknown key" and isinstance(parent, dict):
            parent[draw(text) or "x"] = draw(values)
        elif action == "drop section":
            data.pop(path[0], None)
    return data


overrides = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "a..b=1",
                "=x",
                "x",
                "rewards.99.weight=1",
                "rewards.0.weight=1",
                "rewards.0.name=nope",
                "rewards.²=1",
                "rewards.-1.weight=1",
                "name.sub=1",
                "train.steps=" + "9" * 5000,
                "train.steps=[",
                "train.output_dir={",
                "model=3",
                "model.dtype.x=1",
                "rewards.0.a.b=1",
            ]
        ),
        st.builds(
            lambda k, v: f"{k}={v}",
            st.lists(
                st.sampled_from(list(SECTIONS) + FIELD_NAMES + ["0", "9", ""]), max_size=3
            ).map(".".join),
            text,
        ),
    ),
    max_size=3,
)


def check_load_config(path: Path, sets: list[str]) -> None:
    try:
        config = load_config(path, sets)
    except UserError as e:
        assert_one_line(e, str(path), "--set")
    else:
        assert isinstance(config, Config)
        str(config.run_dir)  # the output directory must format


@fuzz(150)
@given(doc=st.one_of(recipes, mutated_shipped_recipes(), values), sets=overrides)
def test_recipe_documents(workdir, doc, sets):
    path = workdir / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    check_load_config(path, sets)


YAML_CHARS = st.sampled_from(list("{}[]:,-?&*!|>'\"%@`# \t\nab1.=\\") + ["\ufeff", "é", "\x00"])


@fuzz(100)
@given(raw=st.one_of(st.binary(max_size=60), st.text(YAML_CHARS, max_size=60).map(str.encode)))
@example(raw=b"name: \xff\xfe\n")
@example(raw=b"a: [1,\n b: 2")
@example(raw=b"[" * 5000)
@example(raw=b"a: " + b"9" * 5000)
@example(raw=b"a: &x [*x]")
@example(raw=b"")
def test_recipe_raw_bytes(workdir, raw):
    path = workdir / "raw.yaml"
    path.write_bytes(raw)
    check_load_config(path, [])


BAD_RECIPES = [
    "train: {steps: zero}",
    "nope: 1",
    "- a\n- b",
    "rewards: [{name: nope}]",
    "rewards: [{name: '.rel:f'}]",
    "a: [1,\n b: 2",
    "train: {output_dir: 'runs/{nme}'}",
    "algo: {advantage: nope}",
]


@fuzz(len(BAD_RECIPES))
@given(text_=st.sampled_from(BAD_RECIPES))
def test_cli_train_bad_recipe_is_one_line(workdir, text_):
    path = workdir / "bad.yaml"
    path.write_text(text_)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["train", str(path)]) == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("frugalrl: error: "), lines
    assert str(path) in lines[0] and "Traceback" not in err.getvalue()


# ---- dataset files ---------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=10),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)
rows = st.fixed_dictionaries(
    {},
    optional={
        "problem": st.one_of(st.text(max_size=20), json_values),
        "answer": st.one_of(st.text(max_size=8), st.integers(), st.floats(), json_values),
        "id": st.one_of(st.text(max_size=3), st.integers(0, 3)),
        "odd\nkey\u2028": st.just(1),  # listed in the "missing field" error
    },
)
good_rows = st.fixed_dictionaries(
    {"problem": st.text(min_size=1, max_size=20).filter(str.strip), "answer": st.just("12")}
)


@st.composite
def data_lines(draw):
    """A line of a JSONL file: a row (maybe truncated), a non-object, blank, or junk."""
    kind = draw(st.sampled_from(["good", "row", "truncated", "non-object", "blank", "junk"]))
    if kind == "good":
        return json.dumps(draw(good_rows))
    if kind == "row":
        return json.dumps(draw(rows))
    if kind == "truncated":
        line = json.dumps(draw(rows))
        return line[: draw(st.integers(0, max(0, len(line) - 1)))]
    if kind == "non-object":
        return json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict))))
    if kind == "blank":
        return draw(st.sampled_from(["", " ", "\t", "\u2028", "\x1c", "\u00a0"]))
    return draw(st.text(max_size=20))


@st.composite
def data_files(draw):
    """Bytes of a JSONL file: lines, maybe a BOM, bad UTF-8, a huge row, \\r\\n endings."""
    lines = draw(st.lists(data_lines(), max_size=6))
    if draw(st.integers(0, 9)) == 0:  # a 5 MB row, now and then
        lines.insert(
            draw(st.integers(0, len(lines))),
            json.dumps({"problem": "x" * 5_000_000, "answer": "1"}),
        )
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    data = newline.join(lines).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data += newline.encode()
    if draw(st.integers(0, 4)) == 0:
        data = b"\xef\xbb\xbf" + data
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(data)))
        data = (
            data[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\x80"]))
            + data[at:]
        )
    return data


DATA_EXAMPLES = [
    b"",
    b"  \n\n\t\n",
    b'{"problem": "a", "answer": "1"}\n{"problem": "b", "ans',
    b'{"problem": "a"}\n',
    b'{"problem": "a", "answer": null}\n',
    b"[1, 2]\n",
    b'\xef\xbb\xbf{"problem": "a", "answer": "1"}\n',
    b'{"problem": "a\xff", "answer": "1"}\n',
    b'{"problem": "a", "answer": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
    b'{"problem": "a", "answer": ' + b"9" * 5000 + b"}\n",
    b'{"problem": "a", "answer": 1}\r{"problem": "b", "answer": 2}\r',
]
LINE_ERRORS = ("not valid JSON", "not UTF-8", "expected a JSON object")


def check_data_error(err: UserError, path: Path) -> None:
    msg = assert_one_line(err, str(path))
    if any(kind in msg for kind in LINE_ERRORS):
        assert re.search(re.escape(str(path)) + r":\d+: ", msg), msg


def with_examples(**extra):
    """Decorator: every one of DATA_EXAMPLES is tried, whatever hypothesis generates."""

    def decorate(test):
        for raw in DATA_EXAMPLES:
            test = example(raw=raw, **extra)(test)
        return test

    return decorate


@fuzz(120)
@given(raw=data_files())
@with_examples()
def test_load_problems_jsonl(workdir, raw):
    path = workdir / "data.jsonl"
    path.write_bytes(raw)
    try:
        problems = load_problems(str(path))
    except UserError as e:
        check_data_error(e, path)
    else:
        assert problems
        for p in problems:
            assert isinstance(p["problem"], str) and p["problem"].strip()
            assert isinstance(p["answer"], str) and p["answer"].strip()


@fuzz(120)
@given(raw=data_files())
@with_examples()
def test_load_benchmark_jsonl(workdir, raw):
    path = workdir / "bench.jsonl"
    path.write_bytes(raw)
    try:
        bench = load_benchmark(str(path))
    except UserError as e:
        check_data_error(e, path)
    else:
        ids = [p["id"] for p in bench.problems]
        assert len(set(ids)) == len(ids) and all(isinstance(i, str) for i in ids)
        assert all(isinstance(p["answer"], str) for p in bench.problems)


@fuzz(8)
@given(
    raw=st.one_of(
        st.sampled_from(
            [
                b'{"problem": "a", "ans',
                b'[{"problem": "a", "answer": 1}, {"problem": 3, "answer": [1]}]',
                b"[1, 2]",
                b"\xff\xfe",
                b"",
                b'[{"problem": "a", "answer": "1"}]',
            ]
        ),
        data_files(),
    )
)
def test_load_problems_json(workdir, raw):
    path = workdir / "data.json"
    path.write_bytes(raw)
    try:
        problems = load_problems(str(path))
    except UserError as e:
        assert_one_line(e, str(path))
    else:
        assert all(isinstance(p["answer"], str) for p in problems)


@fuzz(100)
@given(raw=data_files(), suffix=st.sampled_from([".jsonl", ".jsonl", ".json"]))
@with_examples(suffix=".jsonl")
@example(raw=b"\xef\xbb\xbf\xe2\x80\xa8\n[]", suffix=".json")  # U+2028 is not JSON whitespace
def test_curation_load_drops_bad_rows(workdir, raw, suffix):
    path = workdir / f"curate{suffix}"
    path.write_bytes(raw)
    config = LoadConfig.model_validate({"sources": [{"name": "s", "path": str(path)}]})
    try:
        result = curate_load([], config, StageContext(workdir, progress=False))
    except UserError as e:  # a .json array that is not valid JSON as a whole: one line
        assert suffix == ".json" and raw.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")
        assert_one_line(e, str(path))
        return
    read = result.stats["rows read per source"]["s"]
    assert len(result.kept) + len(result.dropped) == read
    for row in result.kept:
        assert isinstance(row["problem"], str) and isinstance(row["answer"], str)
        assert row["_origin"].startswith(path.name)
    for d in result.dropped:
        assert d.row["_origin"].startswith(path.name) and d.reason
        assert "\n" not in d.detail


# ---- rewards ---------------------------------------------------------------------------------

FRAGMENTS = [
    "\\boxed{",
    "\\fbox{",
    "}",
    "{",
    "\\{",
    "</think>",
    "\n</think>\n",
    "<think>\n",
    "<answer>\n",
    "\n</answer>",
    "$",
    "$$",
    "\\(",
    "\\)",
    "\\[",
    "\\frac{1}{2}",
    "\\sqrt{2}",
    "#### 12\n",
    "####",
    "the final answer is ",
    "12",
    "-3.5",
    "x+1",
    "\\",
    " ",
    "\n",
    "\x00",
    "\x1b[0m",
    "\u202e",
    "π",
    "日本語",
    "Привет",
    "𝑥",
    "\ud800",
]
completions = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join),
)
answers = st.one_of(
    st.sampled_from(
        ["12", "\\frac{1}{2}", "", "{", "x+1", "\\boxed{3}", "$5$", "1,2", "3 \\mid n"]
    ),
    st.text(max_size=12),
    st.integers(),
    st.floats(),
    st.none(),
)
REWARD_PARAMS = {
    "accuracy": [{}, {"truncated_is_wrong": True}, {"extraction": "boxed"}],
    "alp": [{}, {"beta": 0.0}, {"beta": 2.0, "max_tokens": 1}],
    "cosine": [{}, {"max_len": 1}, {"extraction": "boxed_latex_expr"}],
    "efficiency": [{}, {"alpha": 0.0}, {"alpha": 1.0}],
    "format": [{}, {"schema": "open-r1"}, {"schema": "boxed"}],
    "kimi_length": [{}, {"extraction": "boxed"}],
    "l1_exact": [{}, {"alpha": 0.0}],
    "l1_max": [{}, {"alpha": 1.0, "delta": 0.0}],
    "language": [{}, {"script": "han"}, {"script": "greek", "threshold": 0.0}],
    "laser": [{}, {"target_tokens": 1, "bonus": 2.0}, {"target_tokens": None}],
    "laser_d": [{}, {"target_tokens": 3}, {"targets": {"low": None, "medium": 5, "high": 1}}],
    "overlong": [{}, {"max_len": 10, "cache_len": 10}],
    "repetition": [{}, {"ngram_size": 1}],
    "shorterbetter": [{}, {"alpha": 0.0, "beta": 1.0}, {"extraction": "boxed"}],
    "thinkprune": [{}, {"max_tokens": 1}],
}


def test_every_registered_reward_is_fuzzed():
    assert set(REWARD_PARAMS) == set(REWARDS.names())


samples = st.builds(
    Sample,
    completion=completions,
    num_tokens=st.integers(0, 10**6),
    finished=st.booleans(),
    example=st.builds(lambda a: {"answer": a, "problem": "p"}, answers),
)


def check_values(values, n):
    assert isinstance(values, list) and len(values) == n
    for v in values:
        assert v is None or (isinstance(v, float) and math.isfinite(v)), values


@fuzz(60)
@given(
    name=st.sampled_from(sorted(REWARD_PARAMS)),
    group=st.lists(samples, min_size=1, max_size=3),
    data=st.data(),
)
def test_rewards_in_process(name, group, data):
    """In the main thread, math-verify's own 2 s limits apply: each call ends, in bounded time."""
    params = data.draw(st.sampled_from(REWARD_PARAMS[name]))
    start = time.monotonic()
    check_values(REWARDS.get(name)(group, **params), len(group))
    assert time.monotonic() - start < 10 * len(group)


@given(text_=st.lists(st.sampled_from(FRAGMENTS + ["a"]), max_size=30).map("".join))
@fuzz(300)
def test_open_r1_format_matches_its_regex(text_):
    assert _open_r1(text_) == (_OPEN_R1.fullmatch(text_) is not None)


def test_open_r1_format_is_linear():
    text_ = "<think>\n" + "\n</think>\n<answer>\n" * 20_000 + "x"  # 380 kB: the regex took 30 s
    start = time.monotonic()
    assert REWARDS.get("format")([Sample(text_, 1, True, {})], schema="open-r1") == [0.0]
    assert time.monotonic() - start < 1


PATHOLOGICAL = [
    "\\boxed{10^{10^{10^{10}}}}",
    "\\boxed{9999999!}",
    "\\boxed{" + "1+" * 200_000 + "1}",
    "\\boxed{" * 200_000,
    "\\(" * 100_000,  # language: each unclosed \( scans 2,000 characters (1.5 s)
    "x" * 5_000_000,
    "<think>\n" + "\n</think>\n<answer>\n" * 20_000,
    "",
]


@pytest.fixture(scope="module")
def scorer():
    """Every registered reward, in one worker process under a 10 s no-progress watchdog."""
    specs = [RewardSpec(name) for name in sorted(REWARD_PARAMS)]
    with RewardScorer(specs, workers=1, timeout=10.0) as s:
        yield s


def test_scorer_never_hangs_on_pathological_completions(scorer):
    groups = [
        [Sample(c, n, n % 2 == 0, {"answer": "10^{10^{10}}", "problem": "p"})]
        for n, c in enumerate(PATHOLOGICAL)
    ]
    start = time.monotonic()
    batch = scorer.score(groups)
    assert time.monotonic() - start < 120
    assert set(batch.per_reward) == set(REWARD_PARAMS)
    for per_group in batch.per_reward.values():
        for g, values in enumerate(per_group):
            check_values(values, len(groups[g]))
    assert not batch.failures  # no reward raised: every value is a number or an honest None


@fuzz(15)
@given(groups=st.lists(st.lists(samples, min_size=1, max_size=3), min_size=1, max_size=3))
def test_scorer_on_arbitrary_groups(scorer, groups):
    batch = scorer.score(groups)
    assert not batch.failures
    for per_group in [*batch.per_reward.values(), batch.totals]:
        for g, values in enumerate(per_group):
            check_values(values, len(groups[g]))


# ---- `frugalrl train` end to end: one line, nothing half-written ------------------------------


def _data(tmp_path, name, raw: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


GOOD = b'{"problem": "1+1", "answer": "2"}\n'
BAD_FILES = {
    "bad.jsonl": GOOD + b'{"problem": "2+2", "ans',
    "noanswer.jsonl": GOOD + b'{"problem": "2+2"}\n',
    "latin1.jsonl": GOOD + b'{"problem": "caf\xe9", "answer": "1"}\n',
    "empty.jsonl": b"",
    "heldout.jsonl": b"[1]\n",
}


def _file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    return path


# case -> (tmp_path -> (--set overrides, strings the error line must contain))
TRAIN_CASES = {
    "bad recipe value": lambda t: (["train.steps=zero"], ["train.steps"]),
    "unknown key": lambda t: (["train.stepz=1"], ["train.stepz"]),
    "bad output_dir": lambda t: ([f"train.output_dir={t}/run/{{nme}}"], ["output_dir"]),
    "missing data file": lambda t: ([f"data.path={t}/nope.jsonl"], [f"{t}/nope.jsonl"]),
    "bad JSON line": lambda t: ([f"data.path={_file(t, 'bad.jsonl')}"], [f"{t}/bad.jsonl:2:"]),
    "missing answer": lambda t: (
        [f"data.path={_file(t, 'noanswer.jsonl')}"],
        [f"{t}/noanswer.jsonl", "answer"],
    ),
    "not UTF-8": lambda t: ([f"data.path={_file(t, 'latin1.jsonl')}"], [f"{t}/latin1.jsonl:2:"]),
    "empty data file": lambda t: ([f"data.path={_file(t, 'empty.jsonl')}"], ["empty.jsonl"]),
    "bad held-out line": lambda t: (
        [f"eval.path={_file(t, 'heldout.jsonl')}"],
        [f"{t}/heldout.jsonl:1:"],
    ),
    "unknown benchmark": lambda t: (["eval.benchmarks=[nope]"], ["nope"]),
}


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.mark.parametrize("existing", [False, True], ids=["new run dir", "existing run dir"])
@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_cli_train_bad_input_writes_nothing(case, existing, tiny_overrides, tmp_path, capsys):
    sets, names = TRAIN_CASES[case](tmp_path)
    run_dir = tmp_path / "run"
    if existing:
        run_dir.mkdir()
        (run_dir / "notes.txt").write_text("mine")
    before = _tree(run_dir) if existing else None
    args = [
        "train",
        "recipes/demo.yaml",
        *[a for s in [*tiny_overrides, *sets] for a in ("--set", s)],
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("frugalrl: error: "), err
    assert "Traceback" not in err
    assert all(name in lines[0] for name in names), (names, lines[0])
    if existing:
        assert _tree(run_dir) == before
    else:
        assert not run_dir.exists()
