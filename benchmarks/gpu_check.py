"""The GPU check of the vLLM engines (``benchmarks/gpu_check.sh`` installs, then runs this).

On a Qwen2-0.5B-shaped model in bf16 (random weights, the demo tokenizer, nothing downloaded):

1. the log-prob gap: vLLM colocated with sleep mode on, its sampled tokens' log-probs against
   the trainer's, before an optimizer step, after it without a sync, and after the sync;
2. a few GRPO steps with ``hf`` and with ``vllm`` colocated (``benchmarks/engines.py``'s runs):
   step time, generation tokens/s, peak GPU memory.

    python benchmarks/gpu_check.py [--steps 3] [--json gpu_check.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import engines  # noqa: E402


def gap_check(root: Path) -> dict[str, float]:
    from frugalrl.algo.logprobs import completion_logprobs, pack_batch
    from frugalrl.policy import load_policy
    from frugalrl.rollout import ROLLOUT_ENGINES, SamplingParams

    model_dir, _, _ = engines.build("qwen2-0.5b", root)
    model, tokenizer = load_policy(model_dir, "bfloat16", torch.device("cuda"))
    engine = ROLLOUT_ENGINES.get("vllm")(
        model, tokenizer, gpu_memory_utilization=0.3, sleep=True, max_model_len=1024
    )
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=64)
    prompt_ids = [tokenizer(p)["input_ids"] for p in ("Compute 8-1+5", "Compute 3+4-2")]

    def gap() -> float:
        groups = engine.generate(prompt_ids, 4, params, seeds=[1, 2])
        rows = [(p, c) for p, g in zip(prompt_ids, groups, strict=True) for c in g]
        batch = pack_batch([p for p, _ in rows], [c.token_ids for _, c in rows], 0)
        batch = {k: v.cuda() for k, v in batch.items()}
        with torch.no_grad():
            trainer, _ = completion_logprobs(model, batch, 1.0)
        diffs = []
        for i, (_, c) in enumerate(rows):
            reported = torch.tensor(c.logprobs, device="cuda")
            known = ~reported.isnan()
            diffs.append((reported[known] - trainer[i, : c.num_tokens].float()[known]).abs())
        return torch.cat(diffs).mean().item()

    before = gap()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.tensor([prompt_ids[0]], device="cuda")
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    stale = gap()
    engine.sync()
    return {"before": before, "unsynced": stale, "after_sync": gap()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device")
    print(f"device: {torch.cuda.get_device_name()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        gaps = gap_check(Path(tmp))
    print(
        "vLLM vs trainer mean |log-prob gap| (bf16): "
        + ", ".join(f"{k} {v:.2e}" for k, v in gaps.items()),
        flush=True,
    )
    torch.cuda.empty_cache()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ("hf", "vllm"):
            out = Path(tmp) / f"{engine}.json"
            command = [sys.executable, engines.__file__, "--one", "qwen2-0.5b", engine]
            command += ["--out", str(out), "--steps", str(args.steps), "--dtype", "bfloat16"]
            command += ["--compile"]  # CUDA graphs and torch.compile: vLLM as users run it
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            results.append(json.loads(out.read_text()))
    print(engines.table(results))
    if args.json:
        args.json.write_text(json.dumps({"gaps": gaps, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
