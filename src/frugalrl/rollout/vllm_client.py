"""``rollout.engine: vllm-server``: sample from a vLLM server in another process.

The trainer either connects to a server you started (``frugalrl serve MODEL``, then
``engine_options: {url: http://127.0.0.1:8000, token_file: vllm-server.token}``), or, with
no ``url``, starts one itself on a free local port with a fresh token, using ``python`` (so vLLM
may live in a virtual environment of its own) and stops it when training ends.

After every optimizer step ``sync`` sends the policy's weights (LoRA merged) through vLLM's
weight-transfer routes, the tensors over a gloo group (``rollout/gloo_transfer.py``); only the
main training process sends.

Sampling ahead (``rollout.max_staleness``): ``submit`` queues a generation on a thread that
posts one request at a time, in order, and returns at once; ``result`` waits for it. ``sync``
first waits for the generations queued before it, so each samples from the weights it was
queued under (its ``version``), then sends the new ones while the trainer waits: the server
samples the next batch during the update and receives weights between batches, as verl's
one-step-off-policy does. One training process only: under data parallelism another
process's queued generation could run while the main one sends weights. A server that dies, refuses or hangs past ``timeout_seconds``
raises ``EngineUnavailable``: the loop saves a checkpoint and stops with that one line.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from frugalrl.errors import UserError
from frugalrl.rollout.base import (
    ROLLOUT_ENGINES,
    Completion,
    EngineUnavailable,
    Generated,
    SamplingParams,
)
from frugalrl.rollout.gloo_transfer import (
    SENDER,
    WeightsMetadata,
    open_group,
    send_weights,
    sender_store,
)
from frugalrl.rollout.vllm_llm import VLLMOptions, completion_from_tokens, options_of
from frugalrl.rollout.vllm_server import TOKEN_ENV
from frugalrl.rollout.vllm_weights import base_model, merged_weights, vllm_weights


@dataclass(frozen=True)
class ServerEngineOptions:
    """``rollout.engine_options`` of ``vllm-server``."""

    # The server's address; None: start one here (``python -m frugalrl serve``).
    url: str | None = None
    # The server's token, or the file ``frugalrl serve --token-file`` wrote it to.
    token: str | None = None
    token_file: str | None = None
    # A request (generation of one step's batch, one weight update) taking longer than this
    # means the server hung: the run checkpoints and stops.
    timeout_seconds: float = 1800.0
    # How long a server started here may take to load the model and listen.
    startup_seconds: float = 600.0
    # The interpreter that runs a server started here (a venv with vLLM, e.g. .venv-vllm).
    python: str = sys.executable
    # VLLMOptions for a server started here (enforce_eager, max_model_len, ...).
    server_options: dict[str, Any] = field(default_factory=dict)
    # The address this trainer's end of the weight-transfer group listens on, reachable from
    # the server (another host's server needs this host's address).
    transfer_host: str = "127.0.0.1"

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> ServerEngineOptions:
        opts = options_of(cls, options, "rollout.engine_options", " for vllm-server")
        VLLMOptions.from_options(opts.server_options, "rollout.engine_options.server_options")
        return opts


def training_rank() -> tuple[int, int]:
    """(rank, world size) of this training process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ServerClient:
    """JSON over HTTP to ``frugalrl serve``, with the run's token."""

    def __init__(self, url: str, token: str, timeout: float) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def post(self, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/{route}",
            data=json.dumps(body or {}).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        return self._send(request, route)

    def _send(self, request, route: str) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                detail = json.loads(detail)["error"]
            raise EngineUnavailable(f"vllm-server {self.url}/{route}: {e.code} {detail}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            # ValueError: a reply cut short is not JSON; HTTPException: nor a whole response
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
            raise EngineUnavailable(
                f"vllm-server {self.url}/{route}: {reason} (the server stopped or hung)"
            ) from None

    # vLLM's weight-sync client protocol (VLLMWeightSyncClient): the same four calls
    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self.post("init_weight_transfer_engine", {"init_info": init_info})

    def start_weight_update(self) -> None:
        self.post("start_weight_update")

    def update_weights(self, update_info: dict[str, Any]) -> None:
        self.post("update_weights", {"update_info": update_info})

    def finish_weight_update(self, weight_version: int | None = None) -> None:
        self.post("finish_weight_update", {"weight_version": weight_version})


def die_with_parent():
    """A ``preexec_fn`` that has the server's child process SIGTERMed when the trainer dies
    (Linux ``PR_SET_PDEATHSIG``), resolved here in the parent (nothing to import after the
    fork), or None where there is no such call."""
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)


class LocalServer:
    """A ``frugalrl serve`` child process started by the trainer, stopped with it."""

    def __init__(self, model_dir: str, dtype: str, opts: ServerEngineOptions) -> None:
        self.token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(32)
        self.dir = Path(tempfile.mkdtemp(prefix="frugalrl-serve-"))
        self.log = self.dir / "server.log"
        ready = self.dir / "ready.json"
        command = [opts.python, "-m", "frugalrl", "serve", model_dir, "--port", "0"]
        command += ["--dtype", dtype, "--ready-file", str(ready)]
        # sharing the machine (and GPU) with this trainer: the colocated engine's memory share,
        # unless asked otherwise; `frugalrl serve` alone takes 0.9 of its own GPU
        options = {"gpu_memory_utilization": VLLMOptions.gpu_memory_utilization}
        for key, value in (options | opts.server_options).items():
            command += ["--option", f"{key}={json.dumps(value)}"]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, TOKEN_ENV: self.token},
                preexec_fn=die_with_parent() if sys.platform.startswith("linux") else None,
            )
        self._finalizer = weakref.finalize(self, _stop, self.process)
        self.url = self._wait_ready(ready, opts.startup_seconds)

    def _wait_ready(self, ready: Path, seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if ready.is_file():
                return json.loads(ready.read_text())["url"]
            if self.process.poll() is not None:
                raise UserError(
                    f"vllm-server exited with code {self.process.returncode} while starting: "
                    f"{self.last_log_line()} (log: {self.log})"
                )
            time.sleep(0.2)
        self.stop()
        raise UserError(f"vllm-server did not listen within {seconds:.0f} s (log: {self.log})")

    def last_log_line(self) -> str:
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if line]
        errors = [line for line in lines if "Error" in line or "error:" in line]
        return (errors or lines or ["(no output)"])[-1].strip()

    def stop(self) -> None:
        self._finalizer()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@ROLLOUT_ENGINES.register("vllm-server")
class VLLMServerEngine:
    """Sampling on a vLLM server holding the policy's current weights (module docstring)."""

    copies_weights = True  # vLLM holds its own copy, refreshed by sync (not under FSDP/ZeRO-3)
    samples_ahead_for_one_process = True  # submit: see the module docstring

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 256,
        dtype: torch.dtype | None = None,
        **engine_options: Any,
    ) -> None:
        self.opts = ServerEngineOptions.from_options(engine_options)
        # what a server started here samples in, and so the dtype weights are sent in; to a
        # server started apart (its own --dtype), in the policy's dtype: its loader casts
        self.dtype = dtype if self.opts.url is None else None
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.rank, world = training_rank()
        self.server: LocalServer | None = None
        # generations queued ahead (submit): one request at a time, in order
        self.queue = concurrent.futures.ThreadPoolExecutor(1, "vllm-server-ahead")
        self.requests = itertools.count()
        self.pending: dict[int, concurrent.futures.Future[Generated]] = {}
        self.free_since = time.perf_counter()  # when the queue last ran dry
        if self.opts.url is None:
            if world > 1:
                raise UserError(
                    "rollout.engine 'vllm-server' with several training processes: start the "
                    "server first (frugalrl serve MODEL) and set rollout.engine_options.url"
                )
            base = base_model(model)
            dtype_name = str(dtype or base.dtype).removeprefix("torch.")
            self.server = LocalServer(base.config.name_or_path, dtype_name, self.opts)
            url, token = self.server.url, self.server.token
        else:
            url, token = self.opts.url, self._token()
        try:
            self.client = ServerClient(url, token, self.opts.timeout_seconds)
            self.client.post("check")  # the token is right (else a one-line 401), it has loaded
            self.weight_version = 0
            self.group = self._open_transfer() if self.rank == 0 else None
            self.sync()  # the server may hold other weights (a resumed run, another run's)
        except BaseException:
            self.close()
            raise

    def _token(self) -> str:
        if self.opts.token:
            return self.opts.token
        if self.opts.token_file:
            try:
                return Path(self.opts.token_file).read_text().strip()
            except OSError as e:
                raise UserError(f"rollout.engine_options.token_file: {e}") from None
        if os.environ.get(TOKEN_ENV):
            return os.environ[TOKEN_ENV]
        raise UserError(
            "rollout.engine_options: a vllm-server url needs its token (token, token_file, or "
            f"{TOKEN_ENV})"
        )

    def _open_transfer(self):
        """Rendezvous with the server: it joins (an HTTP call, answered once it has) while
        this process hosts the group's store."""
        timeout = self.opts.timeout_seconds
        self.store = sender_store(self.opts.transfer_host, timeout)
        info = {
            "master_address": self.opts.transfer_host,
            "master_port": self.store.port,
            "key": secrets.token_hex(16),
            "timeout_seconds": timeout,
        }
        with _Call(self.client.init_weight_transfer_engine, info) as call:
            try:
                group = open_group(self.store, SENDER, info["key"], timeout, call.raise_if_failed)
            except (RuntimeError, TimeoutError) as e:  # gloo, or the server never joined
                raise EngineUnavailable(
                    f"vllm-server {self.client.url}: the weight-transfer group did not form ({e})"
                ) from None
        call.result()
        return group

    def sync(self) -> None:
        """Send the policy's current weights (main training process only), once the
        generations queued before have sampled from the previous ones."""
        concurrent.futures.wait(list(self.pending.values()))
        if self.group is None:
            return
        self.weight_version += 1
        # shapes: no merge needed; the server's load_weights casts to its dtype either way
        metadata = WeightsMetadata.of(vllm_weights(self.model), self.dtype)
        self.client.start_weight_update()
        with _Call(self.client.update_weights, asdict(metadata)) as call:
            try:
                weights = merged_weights(self.model, self.dtype)
                send_weights(self.group, weights, call.raise_if_failed)
            except RuntimeError as e:  # gloo: the peer went away or timed out
                call.raise_if_failed()  # the server's own reason, when it gave one
                raise EngineUnavailable(
                    f"vllm-server {self.client.url}: weight transfer failed ({e})"
                ) from None
        call.result()
        self.client.finish_weight_update(self.weight_version)

    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Completion]]:
        reply = self.client.post(
            "generate",
            {
                "prompts": [list(p) for p in prompt_ids],
                "n": n,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "max_tokens": params.max_new_tokens,
                "seeds": None if seeds is None else [int(s) for s in seeds],
            },
        )
        eos, decode = self.tokenizer.eos_token_id, self.tokenizer.decode
        return [
            [
                completion_from_tokens(
                    s["token_ids"], s["logprobs"], s["finish_reason"], eos, decode
                )
                for s in group
            ]
            for group in reply["groups"]
        ]

    def submit(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> int:
        """Queue a generation beside training (module docstring); its id, for ``result``."""
        request = next(self.requests)
        args = ([list(p) for p in prompt_ids], n, params, None if seeds is None else list(seeds))
        self.pending[request] = self.queue.submit(self._queued_generation, *args)
        return request

    def _queued_generation(self, *args) -> Generated:
        start = time.perf_counter()
        idle = start - self.free_since  # waiting for work since the last generation ended
        version = self.weight_version  # sync waits for this generation before changing it
        try:
            groups = self.generate(*args)
        finally:
            self.free_since = time.perf_counter()
        return Generated(groups, version, self.free_since - start, idle)

    def result(self, request: int) -> Generated:
        """The generation ``request``, waiting for it."""
        return self.pending.pop(request).result()

    def close(self) -> None:
        """Stop a server this engine started (a server given by url keeps running)."""
        self.queue.shutdown(wait=False, cancel_futures=True)
        if self.server is not None:
            self.server.stop()


class _Call:
    """``fn(arg)`` on a thread for the length of a ``with`` block: an HTTP call that only
    returns once this process has done its side of a collective (rendezvous, broadcast)."""

    def __init__(self, fn, arg) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, arg), daemon=True)

    def _run(self, fn, arg) -> None:
        try:
            fn(arg)
        except BaseException as e:  # re-raised in the caller's thread by result()
            self.error = e

    def __enter__(self) -> _Call:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.thread.join()

    def raise_if_failed(self) -> None:
        """Raise the call's error now if it has already failed (the peer will not join)."""
        if self.error is not None:
            raise self.error

    def result(self) -> None:
        self.thread.join()
        self.raise_if_failed()
