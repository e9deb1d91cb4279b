#!/usr/bin/env bash
# The GPU check of the vLLM engines, one command on a fresh CUDA machine (about 8 minutes on one
# GPU): installs frugalrl with its vLLM extra in .venv-gpu, then runs benchmarks/gpu_check.py on
# a Qwen2-0.5B-shaped bf16 model: the vLLM-vs-trainer log-prob gap (before a step, unsynced,
# synced; sleep mode on), and a few GRPO steps with hf and vllm (colocated): step time,
# generation tokens/s, peak GPU memory. Output: the printed table and gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-gpu
.venv-gpu/bin/pip install -q --upgrade pip
.venv-gpu/bin/pip install -q -e ".[vllm]"
.venv-gpu/bin/python benchmarks/gpu_check.py --steps "${STEPS:-3}" --json gpu_check.json
