"""Peak memory of the log-prob + loss stage (output layer, log-softmax, PPO token loss, backward)
for Qwen's vocabulary (V = 151,936, hidden 1,536) on one 4,096-token completion: the chunked
output layer (``train.logprob_chunk_tokens``, each chunk recomputed in backward) against the
plain one (full (tokens, V) logits).

    python benchmarks/logprob_memory.py [--vocab 151936] [--hidden 1536] [--tokens 4096]
        [--chunk-tokens 512 1024 ...] [--threads N] [--device cpu|cuda] [--json PATH]

Both variants run the trainer's own ``completion_logprobs`` (with_entropy=True, as the update
asks: the entropy is a detached statistic) on a stand-in model whose last hidden state is a given
fp32 leaf tensor (1, tokens + 1, hidden) with requires_grad and whose output layer is an
``nn.Linear(hidden, V, bias=False)`` in fp32; the loss is ``-(logp * advantage).mean()``, then
``backward()``. Each variant runs in a fresh process: on CPU its peak is the rise of
``ru_maxrss`` over the stage (inputs and head weights already allocated and touched; glibc's mmap
threshold fixed at 128 KiB so that freed tensors leave the process), on CUDA
``max_memory_allocated`` above the memory allocated before. Values (log-probs, entropies, the
gradients of the hidden states and of the head weight) are compared with the plain run's.

Prints one table; the goal (issue 6) is chunked ≤ ¼ of plain's peak, same values to 1e-5
(log-probs and gradients absolute; the entropy, a logged statistic of size log V, relative).
The full-size run needs about 10 GB of memory for the plain variant.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from frugalrl.algo.logprobs import completion_logprobs

GIB = 1024**3
SEED = 0
ADVANTAGE = 0.5
TEMPERATURE = 1.0
TOLERANCE = 1e-5  # max abs difference allowed between the variants' values
MAX_RATIO = 0.25  # chunked peak (above start) / plain peak


class StandIn(nn.Module):
    """A causal LM reduced to its output layer: the decoder returns a fixed hidden state.

    ``completion_logprobs`` sees the same interface as a Hugging Face model: the plain path
    calls ``model(..., logits_to_keep=k)`` (logits of the last k positions), the chunked path
    ``get_decoder()(...)`` then ``get_output_embeddings()``.
    """

    def __init__(self, hidden: torch.Tensor, head: nn.Linear) -> None:
        super().__init__()
        self.hidden = hidden
        self.lm_head = head

    def get_decoder(self):
        return lambda **_: SimpleNamespace(last_hidden_state=self.hidden)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(self, logits_to_keep: int = 0, **_) -> SimpleNamespace:
        h = self.hidden[:, -logits_to_keep:] if logits_to_keep else self.hidden
        return SimpleNamespace(logits=self.lm_head(h))


def make_batch(tokens: int, vocab: int, device) -> dict[str, torch.Tensor]:
    """A packed batch of one 1-token prompt and one ``tokens``-token completion."""
    ids = torch.randint(0, vocab, (1, tokens + 1), device=device)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "position_ids": torch.arange(tokens + 1, device=device).unsqueeze(0),
        "completion_mask": torch.ones(1, tokens, dtype=torch.bool, device=device),
    }


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_variant(args: argparse.Namespace) -> None:
    """Child process: one variant's stage, its memory and time to ``--out``.json, values to .pt."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    chunk = None if args.variant == "plain" else int(args.variant)
    torch.manual_seed(SEED)
    # One prompt token then `tokens` completion tokens: the completion's log-probs come from the
    # hidden states of positions 0 .. tokens-1 (the last position predicts nothing).
    hidden = torch.randn(1, args.tokens + 1, args.hidden, device=device, requires_grad=True)
    head = nn.Linear(args.hidden, args.vocab, bias=False, device=device)
    batch = make_batch(args.tokens, args.vocab, device)
    model = StandIn(hidden, head)

    def stage(m: nn.Module, b: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logp, entropy = completion_logprobs(
            m, b, TEMPERATURE, with_entropy=True, chunk_tokens=chunk
        )
        loss = -(logp * ADVANTAGE)[b["completion_mask"]].mean()
        loss.backward()
        return logp.detach(), entropy

    # Warm up kernels and the autograd engine on a tiny copy of the stage (its own small head:
    # a warm-up through the real head would leave a head-sized gradient in the high-water mark).
    tiny_hidden = torch.randn(1, 9, args.hidden, device=device, requires_grad=True)
    stage(
        StandIn(tiny_hidden, nn.Linear(args.hidden, 64, device=device)), make_batch(8, 64, device)
    )
    del tiny_hidden
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = maxrss_bytes()

    t0 = time.perf_counter()
    logp, entropy = stage(model, batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else maxrss_bytes()

    out = Path(args.out)
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "before_bytes": before,
                "peak_bytes": peak,
                "peak_above_start_bytes": peak - before,
                "seconds": seconds,
                "threads": torch.get_num_threads(),
            }
        )
    )
    torch.save(
        {
            "logp": logp.cpu(),
            "entropy": entropy.cpu(),
            "grad_hidden": hidden.grad.cpu(),
            "grad_weight": head.weight.grad.cpu(),
        },
        out.with_suffix(".pt"),
    )


def spawn(args: argparse.Namespace, variant: str, workdir: Path) -> dict:
    """Run one variant in a fresh interpreter (a clean high-water mark) and read its figures."""
    out = workdir / f"variant-{variant}"
    cmd = [sys.executable, __file__, "--variant", variant, "--out", str(out)]
    cmd += ["--vocab", str(args.vocab), "--hidden", str(args.hidden), "--tokens", str(args.tokens)]
    cmd += ["--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    # A fixed mmap threshold: glibc otherwise raises it (up to 32 MiB) as large blocks are freed,
    # after which freed chunk-sized tensors stay in the heap and inflate ru_maxrss at small sizes.
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    subprocess.run(cmd, check=True, env=env)
    return json.loads(out.with_suffix(".json").read_text()) | {"values": out.with_suffix(".pt")}


def compare(reference: Path, other: Path) -> dict[str, dict[str, float]]:
    """Max abs (and relative to the plain value's max abs) difference of every saved tensor."""
    a = torch.load(reference, mmap=True)
    b = torch.load(other, mmap=True)
    diffs = {}
    for name in a:
        diff = float((a[name] - b[name]).abs().max())
        scale = float(a[name].abs().max())
        diffs[name] = {"max_abs": diff, "max_rel": diff / scale if scale else 0.0}
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--chunk-tokens", type=int, nargs="+", default=[512, 1024])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # child process: plain or a chunk
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant is not None:
        run_variant(args)
        return

    variants = ["plain", *[str(c) for c in args.chunk_tokens]]
    rows = []
    with tempfile.TemporaryDirectory(prefix="logprob-memory-") as tmp:
        results = {v: spawn(args, v, Path(tmp)) for v in variants}
        plain = results["plain"]
        for v in variants:
            r = results[v]
            diffs = compare(plain["values"], r["values"]) if v != "plain" else None
            rows.append(
                {
                    "variant": "plain" if v == "plain" else f"chunked, {v} tokens/chunk",
                    "chunk_tokens": None if v == "plain" else int(v),
                    "peak_above_start_gib": r["peak_above_start_bytes"] / GIB,
                    "absolute_peak_gib": r["peak_bytes"] / GIB,
                    "start_gib": r["before_bytes"] / GIB,
                    "seconds": r["seconds"],
                    "threads": r["threads"],
                    "ratio_to_plain": r["peak_above_start_bytes"] / plain["peak_above_start_bytes"],
                    "max_abs_diff": diffs and {k: d["max_abs"] for k, d in diffs.items()},
                    "max_rel_diff": diffs and {k: d["max_rel"] for k, d in diffs.items()},
                }
            )

    memory = "max_memory_allocated" if args.device.startswith("cuda") else "ru_maxrss"
    print(
        f"log-prob + loss stage: V={args.vocab:,}, hidden {args.hidden:,}, {args.tokens:,} tokens,"
        f" fp32, {args.device} ({rows[0]['threads']} threads), "
        f"peak from {memory}; memory at start (process, inputs, head weights) {rows[0]['start_gib']:.2f} GiB"
    )
    print(
        f"| {'variant':<28} | {'peak above start (GiB)':>22} | {'absolute peak (GiB)':>19} "
        f"| {'time (s)':>8} | {'ratio to plain':>14} |"
    )
    print(f"|{'-' * 30}|{'-' * 24}|{'-' * 21}|{'-' * 10}|{'-' * 16}|")
    for r in rows:
        print(
            f"| {r['variant']:<28} | {r['peak_above_start_gib']:>22.2f} | "
            f"{r['absolute_peak_gib']:>19.2f} | {r['seconds']:>8.2f} | "
            f"{r['ratio_to_plain']:>14.3f} |"
        )
    ok_all = True
    for r in rows[1:]:
        # The loss and the update see the log-probs and the gradients: absolute 1e-5. The entropy
        # is a logged statistic of size ~log V (≈ 12) summed over V terms in float32: relative.
        worst = max(v for k, v in r["max_abs_diff"].items() if k != "entropy")
        ok_mem = r["ratio_to_plain"] <= MAX_RATIO
        ok_val = worst <= TOLERANCE and r["max_rel_diff"]["entropy"] <= TOLERANCE
        r["pass_memory"], r["pass_values"] = ok_mem, ok_val
        ok_all &= ok_mem and ok_val
        diffs = ", ".join(
            f"{k} {r['max_abs_diff'][k]:.1e} (rel {r['max_rel_diff'][k]:.1e})"
            for k in r["max_abs_diff"]
        )
        print(f"{r['variant']}: max abs diff vs plain: {diffs}")
        print(
            f"  memory {'PASS' if ok_mem else 'FAIL'} (ratio {r['ratio_to_plain']:.3f}, goal "
            f"≤ {MAX_RATIO}); values {'PASS' if ok_val else 'FAIL'} (worst {worst:.1e}, goal "
            f"≤ {TOLERANCE:.0e}; entropy relative)"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "logprob_memory",
                    "vocab": args.vocab,
                    "hidden": args.hidden,
                    "tokens": args.tokens,
                    "device": args.device,
                    "threads": rows[0]["threads"],
                    "memory_measure": memory,
                    "goal": {"max_ratio_to_plain": MAX_RATIO, "max_abs_diff": TOLERANCE},
                    "variants": rows,
                    "pass": ok_all,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
