"""The ``frugalrl`` command: train | demo | curate | rewards | eval | report | export | serve.

User errors (bad recipe, missing file, unknown name) print one line and exit 2, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from frugalrl.errors import UserError

EXIT_GUARD_STOP = 3  # a stability guard stopped the run (saved and reported first)


def _cmd_train(args: argparse.Namespace) -> int | None:
    from frugalrl.config import load_config
    from frugalrl.report import write_run_report
    from frugalrl.train.loop import train

    if args.recipe is None and args.resume is None:
        raise UserError("train needs a RECIPE.yaml (or --resume RUN_DIR)")
    if args.num_processes < 1:
        raise UserError(f"--num-processes must be at least 1, got {args.num_processes}")
    if args.num_processes > 1:
        sys.exit(_launch_data_parallel(args))
    overrides = list(args.set or [])
    if args.resume is not None:
        run_dir = Path(args.resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise UserError(f"--resume: {saved} not found (is {run_dir} a run directory?)")
        recipe = args.recipe or saved
        overrides.append(f"train.output_dir={run_dir}")
    else:
        recipe = args.recipe
    config = load_config(recipe, overrides)
    summary = train(config, resume=args.resume is not None, report=write_run_report)
    if not summary:  # data-parallel: only the main process returns one
        return
    if "interrupted" in summary:
        stop = summary["interrupted"]
        print(
            f"interrupted by {stop['signal']} after step {stop['step']}; checkpoint saved. "
            f"Continue with: frugalrl train --resume {summary['run_dir']}"
        )
        return
    cards = _write_model_cards(Path(summary["run_dir"]))
    _print_summary(summary, cards)
    if "stopped" in summary:
        print(
            f"stopped early after step {summary['stopped']['step']}: {summary['stopped']['reason']}"
        )
        return EXIT_GUARD_STOP
    return None


def _write_model_cards(run_dir: Path) -> list[Path]:
    """README.md model cards in final/ and checkpoints/best/, written here because this process
    still knows the device that trained (the run directory does not record it)."""
    import torch

    from frugalrl.config import load_config
    from frugalrl.policy import pick_device
    from frugalrl.report.model_card import Hardware, write_model_cards
    from frugalrl.train.distributed import launched_processes

    try:
        device = pick_device(load_config(run_dir / "config.yaml").train.device)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
        return write_model_cards(run_dir, Hardware(device.type, launched_processes(), name))
    except Exception as e:  # a card is a courtesy: a finished run must not fail on it
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        print(f"frugalrl: warning: no model card written: {e}", file=sys.stderr)
        return []


def _launch_data_parallel(args: argparse.Namespace) -> int:
    """``frugalrl train`` again in ``--num-processes`` processes on this machine, through
    ``accelerate launch`` (torchrun underneath): one GPU each on CUDA, gloo on a CPU. For
    DeepSpeed, FSDP or several machines, use ``accelerate launch --config_file`` directly
    (``accelerate_configs/``)."""
    import socket
    import subprocess

    with socket.socket() as s:  # a free port, so two runs on one machine do not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_machines=1",
        f"--num_processes={args.num_processes}",
        f"--main_process_port={port}",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        "-m",
        "frugalrl",
        *(["--verbose"] if args.verbose else []),
        "train",
        *([args.recipe] if args.recipe else []),
        *(["--resume", args.resume] if args.resume else []),
        *(f"--set={item}" for item in args.set or []),
    ]
    return subprocess.run(command, check=False).returncode


def _cmd_curate(args: argparse.Namespace) -> None:
    from frugalrl.curate import run_curation, summary_lines

    summary = run_curation(args.config, list(args.set or []), args.out)
    print("\n".join(summary_lines(summary)))


def _cmd_export(args: argparse.Namespace) -> None:
    from frugalrl.export import export_merged

    out = export_merged(args.run_dir, args.out, args.dtype, args.eval or ())
    print(f"merged model: {out} (model card: {out / 'README.md'})")


def _cmd_convert(args: argparse.Namespace) -> None:
    from frugalrl.convert import convert_file

    recipe, report = convert_file(Path(args.config), args.source, args.num_processes)
    if not args.out:
        sys.stdout.write(recipe)
    else:
        try:
            Path(args.out).write_text(recipe, encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write {args.out}: {e.strerror}") from None
    print("\n".join(report + ([f"recipe: {args.out}"] if args.out else [])), file=sys.stderr)


def _cmd_demo(args: argparse.Namespace) -> None:
    from frugalrl.demo.run import run_demo

    summary = run_demo(
        Path(args.out),
        overrides=list(args.set or []),
        fresh=args.fresh,
        recipe=args.recipe,
        run_name=args.run,
    )
    _print_summary(summary, _write_model_cards(Path(summary["run_dir"])))


def _cmd_rewards(args: argparse.Namespace) -> None:
    import json
    import math

    from frugalrl.config import load_config
    from frugalrl.data.dataset import read_jsonl
    from frugalrl.rewards.offline import score_rows

    config = load_config(args.recipe, list(args.set or []))
    rows = read_jsonl(Path(args.input))
    needs_tokenizer = any("tokens" not in r for r in rows)
    tokenizer = None
    if needs_tokenizer:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(config.model.name_or_path)
        except OSError as e:
            raise UserError(
                f"rows without 'tokens' need the recipe model's tokenizer, which did not load "
                f"from '{config.model.name_or_path}': {str(e).splitlines()[0]}"
            ) from None
    specs = [r.spec() for r in config.rewards]
    scored = score_rows(
        rows,
        specs,
        tokenizer,
        # Starting worker processes costs about a second: only worth it for larger files.
        workers=config.scoring.resolved_workers() if len(rows) >= 256 else 0,
        timeout=config.scoring.timeout_seconds,
        source=args.input,
    )
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in scored]
    if args.out:
        Path(args.out).write_text("".join(lines))
    else:
        sys.stdout.writelines(lines)
    print(f"{'reward':<24} {'mean':>8} {'std':>8} {'unscored':>9}", file=sys.stderr)
    for name in [s.name for s in specs] + ["reward"]:
        vals = [r[name] for r in scored if r[name] is not None]
        mean = sum(vals) / len(vals) if vals else math.nan
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals)) if vals else math.nan
        print(f"{name:<24} {mean:>8.4f} {std:>8.4f} {len(scored) - len(vals):>9}", file=sys.stderr)
    if args.out:
        print(f"scored {len(scored)} rows -> {args.out}", file=sys.stderr)


def _cmd_eval(args: argparse.Namespace) -> None:
    from frugalrl.eval.benchmarks import load_benchmark, parse_benchmark_list
    from frugalrl.eval.regrade import regrade
    from frugalrl.eval.summary import parse_vote, summary_markdown
    from frugalrl.group_pool import default_workers
    from frugalrl.rewards.answer import check_extraction

    check_extraction(args.extraction)
    workers = default_workers() if args.workers == "auto" else int(args.workers)
    votes = tuple(args.vote or ())
    for vote in votes:
        parse_vote(vote)
    if args.regrade:
        out = Path(args.out) if args.out else None
        summary = regrade(Path(args.regrade), out, args.extraction, workers, args.timeout, votes)
        print(summary_markdown(summary, title=f"regrade of {args.regrade}"))
        print(f"graded in {summary['grade_seconds']:.2f} s", file=sys.stderr)
        return
    if not args.model:
        raise UserError("eval needs --model PATH_OR_RUN_DIR (or --regrade GENERATIONS.jsonl)")
    from frugalrl.eval.runner import EvalSettings, ModelSource, evaluate_model  # imports torch

    if args.samples < 1:
        raise UserError(f"--samples must be >= 1, got {args.samples}")
    benchmarks = [
        load_benchmark(
            spec,
            problem_field=args.problem_field,
            answer_field=args.answer_field,
            id_field=args.id_field,
            limit=args.limit,
        )
        for spec in parse_benchmark_list(args.benchmarks)
    ]
    settings = EvalSettings(
        samples=args.samples,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        prompt_template=args.prompt_template,
        system_prompt=args.system_prompt,
        extraction=args.extraction,
        seed=args.seed,
        votes=votes,
    )
    out = Path(args.out) if args.out else Path("evals") / Path(args.model).name
    source = ModelSource(
        args.model,
        engine=args.engine,
        engine_options=parse_options(args.engine_option, "--engine-option"),
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
    )
    grading = {"workers": workers, "timeout": args.timeout, "progress": not args.no_progress}
    sweep = _budget_sweep(args)
    if sweep is not None:
        _eval_sweep(sweep, source, benchmarks, settings, out, grading)
        return
    summary = evaluate_model(source, benchmarks, settings, out, **grading)
    print(summary_markdown(summary, title=summary.get("model")))
    print(f"written to {out}/ (generations.jsonl, summary.json, summary.md)", file=sys.stderr)


def _budgets(text: str, flag: str) -> tuple[int, ...]:
    try:
        budgets = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected token counts, e.g. 64,128,256") from None
    if not budgets or min(budgets) < 1:
        raise UserError(f"{flag} {text!r}: every budget must be >= 1 token")
    return budgets


def _budget_sweep(args: argparse.Namespace):
    from frugalrl.eval.sweep import BudgetSweep

    if args.budget and args.budget_forcing:
        raise UserError("--budget and --budget-forcing: give one (one sweep per evaluation)")
    if args.budget:
        return BudgetSweep("budget", _budgets(args.budget, "--budget"), args.budget_kind)
    if args.budget_forcing:
        budgets = _budgets(args.budget_forcing, "--budget-forcing")
        return BudgetSweep("forcing", budgets, answer_tokens=args.answer_tokens)
    return None


def _eval_sweep(sweep, source, benchmarks, settings, out: Path, grading: dict) -> None:
    from frugalrl.eval.sweep import run_sweep, sweep_markdown
    from frugalrl.report.sweep_plot import write_sweep_plot

    with source.open() as (engine, tokenizer, model_dir):
        meta = {"model": model_dir, "engine": source.engine}
        table = run_sweep(sweep, engine, tokenizer, benchmarks, settings, out, meta, **grading)
    png = write_sweep_plot(table, out)
    print(sweep_markdown(table))
    print(
        f"written to {out}/ ({sweep.kind}-N/ per budget, {sweep.kind}.md, {png.name})",
        file=sys.stderr,
    )


def parse_options(pairs: list[str] | None, flag: str) -> dict:
    """``KEY=VALUE`` pairs as a dict, each value read as a YAML scalar (``--option x=1``)."""
    import yaml

    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {pair!r}: expected KEY=VALUE")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"{flag} {pair!r}: the value is not a YAML scalar") from None
    return options


def _cmd_serve(args: argparse.Namespace) -> None:
    from frugalrl.rollout.vllm_llm import VLLMOptions
    from frugalrl.rollout.vllm_server import serve

    # its own GPU (CUDA_VISIBLE_DEVICES): most of it, as `vllm serve` takes
    given = {"gpu_memory_utilization": 0.9} | parse_options(args.option, "--option")
    options = VLLMOptions.from_options(given, "--option")
    with contextlib.suppress(KeyboardInterrupt):
        serve(
            args.model,
            args.host,
            args.port,
            args.dtype,
            options,
            Path(args.token_file) if args.token_file else None,
            Path(args.ready_file) if args.ready_file else None,
        )


def _cmd_report(args: argparse.Namespace) -> None:
    from frugalrl.report.compare import compare_report

    markdown, png = compare_report(
        [Path(p) for p in args.paths], Path(args.out) if args.out else None, args.benchmark
    )
    print(markdown)
    if png is not None:
        print(f"frontier plot: {png}", file=sys.stderr)


def _print_summary(summary: dict, cards: Sequence[Path] = ()) -> None:
    ev = summary.get("eval", {})
    for label in ("base", "final"):
        if label in ev:
            e = ev[label]
            lo, hi = e["accuracy_ci95"]
            print(
                f"{label:>5}: held-out accuracy {100 * e['accuracy']:.1f}% "
                f"[{100 * lo:.1f}, {100 * hi:.1f}]  mean tokens {e['mean_tokens']:.1f}"
            )
    if "base_weights_bytes" in summary:
        saved, base = summary["saved_weights_bytes"], summary["base_weights_bytes"]
        print(
            f"saved LoRA adapters {saved / 1e6:.2f} MB = {100 * saved / base:.1f}% of the full "
            f"model's {base / 1e6:.2f} MB (frugalrl export RUN_DIR merges them)"
        )
    wall = summary.get("demo_wall_seconds", summary.get("wall_seconds", 0))
    print(f"steps {summary.get('steps')}  wall {wall:.0f} s")
    print(f"report: {summary.get('report')}")
    for card in cards:
        print(f"model card: {card}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frugalrl", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train from a YAML recipe")
    p.add_argument("recipe", nargs="?", help="recipe YAML (optional with --resume)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override, e.g. optim.lr=1e-6"
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument(
        "--num-processes",
        type=int,
        default=1,
        metavar="N",
        help="data-parallel processes on this machine (one per GPU; gloo on a CPU); same "
        "samples and updates as one process",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("demo", help="the built-in miniature open-rs experiment, offline on a CPU")
    p.add_argument("--out", default="runs/demo", help="where the demo writes (default runs/demo)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the demo recipe")
    p.add_argument("--fresh", action="store_true", help="rebuild the SFT base even if cached")
    p.add_argument(
        "--recipe",
        default="demo",
        help="recipe to train with (default: demo; also demo-efficiency)",
    )
    p.add_argument("--run", default="run", help="run directory name inside --out (default: run)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("curate", help="build a training set: load, check answers, dedup, ...")
    p.add_argument("config", help="curation config YAML (e.g. recipes/curate-open-rs.yaml)")
    p.add_argument("--out", help="output directory (default: the config's output_dir)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override, e.g. load.sources.0.path=my.jsonl or dedup.threshold=0.9",
    )
    p.set_defaults(func=_cmd_curate)

    p = sub.add_parser("rewards", help="score saved completions with a recipe's rewards")
    p.add_argument("--recipe", required=True, help="recipe whose `rewards` (and tokenizer) to use")
    p.add_argument(
        "--input", required=True, help="JSONL rows: group, completion, answer[, finished, tokens]"
    )
    p.add_argument("--out", help="write scored rows here (default: stdout)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the recipe")
    p.set_defaults(func=_cmd_rewards)

    p = sub.add_parser("eval", help="evaluate a model on the math benchmarks (or --regrade)")
    p.add_argument("--model", help="model directory, run directory (final/) or hub name")
    p.add_argument(
        "--benchmarks",
        default="aime24,amc23,math500,minerva,olympiadbench",
        help="comma-separated: aime24, amc23, math500, minerva, olympiadbench, gsm8k, aime25, "
        "hmmt_feb25, all, or a JSONL path (NAME=PATH names it); default: the open-rs five",
    )
    p.add_argument("--samples", type=int, default=1, help="k samples per problem (default 1)")
    p.add_argument("--temperature", type=float, default=0.6, help="default 0.6 (open-rs)")
    p.add_argument("--top-p", type=float, default=0.95, help="default 0.95 (open-rs)")
    p.add_argument("--max-new-tokens", type=int, default=32768, help="default 32768 (open-rs)")
    p.add_argument(
        "--prompt-template",
        default="open-rs-eval",
        help="open-rs-eval (default), arora-zanette, open-rs (training system prompt), plain, "
        "or a string with {problem}; the tokenizer's chat template is applied",
    )
    p.add_argument("--system-prompt", help="replace the template's system prompt")
    p.add_argument(
        "--engine",
        default="hf",
        help="rollout engine: hf, hf-generate, vllm (colocated), vllm-server (docs/scale-out.md#vllm-rollouts)",
    )
    p.add_argument(
        "--engine-option",
        action="append",
        metavar="KEY=VALUE",
        help="an engine option, as rollout.engine_options in a recipe (e.g. enforce_eager=true)",
    )
    p.add_argument("--out", help="output directory (default evals/<model name>)")
    p.add_argument("--limit", type=int, help="first N problems of each benchmark")
    p.add_argument("--problem-field", default="problem", help="field of your own JSONL files")
    p.add_argument("--answer-field", default="answer", help="field of your own JSONL files")
    p.add_argument("--id-field", default="id", help="field of your own JSONL files")
    p.add_argument(
        "--extraction",
        default="boxed_or_anchored",
        help="final-answer extraction: boxed_or_anchored (default), boxed, boxed_latex_expr",
    )
    p.add_argument(
        "--budget",
        metavar="N[,N...]",
        help="state a target length in every prompt (L1-trained models), one evaluation per "
        "budget: an accuracy vs budget table and plot",
    )
    p.add_argument(
        "--budget-kind",
        choices=["max", "exact"],
        default="max",
        help="with --budget: 'Think for maximum N tokens.' (default) or 'Think for N tokens.'",
    )
    p.add_argument(
        "--budget-forcing",
        metavar="N[,N...]",
        help="s1 budget forcing: at N tokens close the thinking (</think>) and let the model "
        "answer; one evaluation per budget, a table and plot",
    )
    p.add_argument(
        "--answer-tokens",
        type=int,
        default=256,
        help="with --budget-forcing: tokens allowed for the answer after the cut (default 256)",
    )
    p.add_argument(
        "--vote",
        action="append",
        metavar="short-M@K",
        help="also report short-m@k (Hassid et al. 2025): of K samples, the first M to finish "
        "vote, ties to the shortest; accuracy and tokens actually spent (K=k: all samples). "
        "Repeatable",
    )
    p.add_argument("--regrade", metavar="JSONL", help="re-grade saved generations, no model")
    p.add_argument("--workers", default="auto", help="grading processes (auto: one per core)")
    p.add_argument("--timeout", type=float, default=30.0, help="grading watchdog, seconds")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPU), float32, bfloat16")
    p.add_argument("--batch-size", type=int, default=256, help="sequences per generate call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("export", help="merge a LoRA run's adapters into a full HF model")
    p.add_argument("run_dir", type=Path, help="a run directory trained with a peft: section")
    p.add_argument("--out", type=Path, default=None, help="where to save (default RUN_DIR/merged)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    p.add_argument(
        "--eval",
        action="append",
        type=Path,
        metavar="EVAL_DIR",
        help="a frugalrl eval output directory of this model: its results go on the model card "
        "(repeatable)",
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("convert", help="an open-r1 / open-rs GRPO config as a frugalrl recipe")
    p.add_argument("config", help="their recipe YAML (e.g. open-rs's recipes/grpo.yaml)")
    p.add_argument("-o", "--out", help="write the recipe here (default: stdout)")
    p.add_argument(
        "--source",
        choices=["open-rs", "open-r1"],
        default="open-rs",
        help="whose defaults and reward functions the config means (default: open-rs)",
    )
    p.add_argument(
        "--num-processes",
        type=int,
        default=1,
        metavar="N",
        help="training processes it ran with (accelerate's num_processes; open-rs: 3): "
        "prompts per step = batch x accumulation x N / num_generations",
    )
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("report", help="compare eval/run directories: table + frontier PNG")
    p.add_argument("paths", nargs="+", help="eval directories, run directories, summary.json")
    p.add_argument("--out", help="where report.md and frontier.png go")
    p.add_argument("--benchmark", default="overall", help="benchmark to compare (overall)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("serve", help="serve a model with vLLM for rollout.engine vllm-server")
    p.add_argument("model", help="model directory or hub name (the policy's starting weights)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, ...")
    p.add_argument(
        "--token-file",
        default="vllm-server.token",
        help="where the run's token is written, mode 0600, unless FRUGALRL_SERVE_TOKEN is set",
    )
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="vLLM option: gpu_memory_utilization, max_model_len, seed, enforce_eager, "
        "cpu_kv_cache_gib, enable_prefix_caching (rollout.engine_options of the vllm engine)",
    )
    p.add_argument("--ready-file", help=argparse.SUPPRESS)  # a trainer that starts the server
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if (
        not args.verbose
        and args.command in {"train", "demo", "eval"}
        and not getattr(args, "regrade", None)
    ):
        # transformers draws a bar per weight load/save; ours are the ones that matter.
        import transformers

        transformers.utils.logging.disable_progress_bar()
    try:
        code = args.func(args)
    except UserError as e:
        if args.verbose:
            raise
        print(f"frugalrl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("frugalrl: interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
