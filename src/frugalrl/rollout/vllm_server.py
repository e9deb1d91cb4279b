"""``frugalrl serve MODEL``: vLLM in a process of its own, for ``rollout.engine: vllm-server``.

On a GPU machine it runs on its own GPU while the trainer has the others (open-rs's layout:
three training GPUs, one vLLM GPU): ``CUDA_VISIBLE_DEVICES=3 frugalrl serve MODEL``.

HTTP, JSON bodies, every route but ``/health`` behind the run's bearer token:

* ``POST /generate`` — token-id prompts, G samples each, per-prompt seeds → token ids, the
  sampled tokens' log-probs and finish reasons;
* vLLM's weight-transfer routes, as its RL server names them: ``/init_weight_transfer_engine``
  (the trainer's rendezvous), ``/start_weight_update``, ``/update_weights`` (metadata; the
  tensors come over the transfer group, ``rollout/gloo_transfer.py``), ``/finish_weight_update``
  (also refreshes a tied output layer and resets the prefix cache).

It binds 127.0.0.1 unless ``--host`` says otherwise. The token is the one in
``FRUGALRL_SERVE_TOKEN`` when set (a trainer that starts the server passes its own that way),
else a fresh one written to ``--token-file`` (mode 0600): without it nobody can push weights
into the server or read from it.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import sys
import threading
from dataclasses import asdict, dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from frugalrl.errors import UserError
from frugalrl.policy import pick_device, pick_dtype
from frugalrl.rollout.base import SamplingParams
from frugalrl.rollout.gloo_transfer import (
    RECEIVER,
    WeightsMetadata,
    open_group,
    receive_weights,
    receiver_store,
)
from frugalrl.rollout.vllm_llm import (
    INSTALL_HINT,
    VLLMOptions,
    build_llm,
    import_vllm,
    sampled_logprobs,
    vllm_sampling,
)
from frugalrl.rollout.vllm_weights import finish_tied_head

TOKEN_ENV = "FRUGALRL_SERVE_TOKEN"
GLOO_BACKEND = "frugalrl-gloo"


@dataclass
class GlooInitInfo:
    """``/init_weight_transfer_engine``'s ``init_info``: where the trainer's store listens."""

    master_address: str
    master_port: int
    key: str  # names the store's keys: only a trainer that was told it can join
    timeout_seconds: float = 600.0


def register_gloo_backend() -> None:
    """Register the gloo transport as a vLLM weight-transfer backend (``GLOO_BACKEND``)."""
    import_vllm("frugalrl serve")
    try:
        from vllm.distributed.weight_transfer.base import (
            WeightTransferEngine,
            WeightTransferInitInfo,
            WeightTransferUpdateInfo,
        )
        from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory
        from vllm.model_executor.model_loader.reload import (
            finalize_layerwise_reload,
            initialize_layerwise_reload,
        )
    except ImportError as e:  # a vLLM from before its weight-transfer API (0.32)
        raise UserError(f"frugalrl serve needs vLLM >= 0.32 ({e}); {INSTALL_HINT}") from None

    if GLOO_BACKEND in WeightTransferEngineFactory._registry:
        return

    @dataclass
    class InitInfo(GlooInitInfo, WeightTransferInitInfo):
        pass

    @dataclass
    class UpdateInfo(WeightsMetadata, WeightTransferUpdateInfo):
        pass

    class GlooWeightTransferEngine(WeightTransferEngine[InitInfo, UpdateInfo]):
        """Checkpoint-format weights over gloo, loaded through vLLM's layerwise reload."""

        init_info_cls, update_info_cls = InitInfo, UpdateInfo

        def init_transfer_engine(self, init_info: InitInfo) -> None:
            timeout = init_info.timeout_seconds
            self.store = receiver_store(init_info.master_address, init_info.master_port, timeout)
            self.group = open_group(self.store, RECEIVER, init_info.key, timeout)

        def start_weight_update(self) -> None:
            initialize_layerwise_reload(self.model)

        def receive_weights(self, update_info: UpdateInfo) -> None:
            failed: Exception | None = None
            for name, tensor in receive_weights(self.group, update_info):
                if failed is not None:
                    continue  # drain: the trainer finishes its broadcasts, then hears why
                try:
                    self.model.load_weights([(name, tensor.to(self.device))])
                except Exception as e:
                    failed = e
            if failed is not None:
                raise failed

        def finish_weight_update(self) -> None:
            finalize_layerwise_reload(self.model, self.model_config)

        def shutdown(self) -> None:
            self.group = self.store = None

    WeightTransferEngineFactory.register_engine(GLOO_BACKEND, GlooWeightTransferEngine)


class VLLMServer:
    """The served ``LLM`` and what the routes do with it (one request at a time)."""

    def __init__(self, model_dir: str, dtype: str, options: VLLMOptions) -> None:
        register_gloo_backend()
        if dtype == "auto":  # the trainer's "auto": bf16 on a GPU that has it, else fp32
            dtype = pick_dtype("auto", pick_device("auto"))
        self.model_dir = model_dir
        self.llm = build_llm(
            model_dir,
            dtype,
            replace(options, sleep=False),  # a server has no training phase to sleep through
            weight_transfer_config={"backend": GLOO_BACKEND},
        )
        self.lock = threading.Lock()
        self.weight_version = 0
        self.update_open = False  # between start_ and finish_weight_update: weights incomplete

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.model_dir, "weight_version": self.weight_version}

    def check(self, body: dict[str, Any]) -> dict[str, Any]:
        """An authenticated no-op: the trainer learns its token is right before it waits on a
        rendezvous."""
        return self.health()

    def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        params = SamplingParams(
            float(body.get("temperature", 1.0)),
            float(body.get("top_p", 1.0)),
            int(body["max_tokens"]),
        )
        prompts = [{"prompt_token_ids": [int(t) for t in p]} for p in body["prompts"]]
        with self.lock:
            if self.update_open:
                raise RuntimeError("a weight update is open: the weights are incomplete")
            outputs = self.llm.generate(
                prompts, vllm_sampling(params, int(body["n"]), body.get("seeds")), use_tqdm=False
            )
        groups = [
            [
                {
                    "token_ids": list(o.token_ids),
                    "logprobs": sampled_logprobs(o),
                    "finish_reason": o.finish_reason,
                }
                for o in out.outputs
            ]
            for out in outputs
        ]
        return {"groups": groups, "weight_version": self.weight_version}

    def init_weight_transfer_engine(self, body: dict[str, Any]) -> dict[str, Any]:
        info = GlooInitInfo(**body["init_info"])  # a bad field is a 400, before any rendezvous
        with self.lock:
            if self.update_open:  # the last trainer went away mid-update: close it first
                with contextlib.suppress(Exception):
                    self.llm.finish_weight_update()
                self.update_open = False
            self.llm.shutdown_weight_transfer_engine()
            self.llm.init_weight_transfer_engine({"init_info": asdict(info)})
        return {}

    def start_weight_update(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.llm.start_weight_update()
            self.update_open = True
        return {}

    def update_weights(self, body: dict[str, Any]) -> dict[str, Any]:
        info = asdict(WeightsMetadata(**body["update_info"]))
        with self.lock:
            self.llm.update_weights({"update_info": info})
        return {}

    def finish_weight_update(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.update_open = False  # whatever happens next, the round is over
            self.llm.finish_weight_update()
            self.llm.collective_rpc(finish_tied_head)
            self.llm.reset_prefix_cache()  # its blocks hold the old weights' keys and values
            self.weight_version = int(body.get("weight_version", self.weight_version + 1))
        return {"weight_version": self.weight_version}


ROUTES = (
    "check",
    "generate",
    "init_weight_transfer_engine",
    "start_weight_update",
    "update_weights",
    "finish_weight_update",
)


MAX_BODY_BYTES = 256 * 2**20  # a step's prompts are far less; the weights never come this way


def handler_class(loaded: dict[str, VLLMServer], token: str) -> type[BaseHTTPRequestHandler]:
    """Routes for ``loaded["server"]``, once the model has loaded (503 before)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the log

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _refuse(self, status: int, error: str) -> None:
            self.close_connection = True  # the body (if any) is left unread
            self._reply(status, {"error": error})

        def do_GET(self) -> None:
            server = loaded.get("server")
            if self.path != "/health":
                self._reply(404, {"error": f"no route GET {self.path}"})
            elif server is None:
                self._reply(503, {"status": "loading"})
            else:
                self._reply(200, server.health())

        def do_POST(self) -> None:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return self._refuse(401, "missing or wrong token")
            route, server = self.path.strip("/"), loaded.get("server")
            if route not in ROUTES:
                return self._refuse(404, f"no route POST {self.path}")
            if server is None:
                return self._refuse(503, "the model is still loading")
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return self._refuse(400, "Content-Length is not a number")
            if not 0 <= length <= MAX_BODY_BYTES:
                return self._refuse(413, f"body of {length} bytes (at most {MAX_BODY_BYTES})")
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError as e:
                return self._reply(400, {"error": f"body is not JSON: {e}"})
            try:
                self._reply(200, getattr(server, route)(body))
            except (KeyError, TypeError, ValueError) as e:
                self._reply(400, {"error": f"{route}: {type(e).__name__}: {e}"})
            except Exception as e:  # the server stays up; the trainer sees what failed
                self._reply(500, {"error": f"{route}: {type(e).__name__}: {e}"})

    return Handler


def serve_token(token_file: Path | None) -> str:
    """The run's token: ``FRUGALRL_SERVE_TOKEN`` if set, else a new one saved to
    ``token_file`` readable by its owner only."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token
    token = secrets.token_urlsafe(32)
    if token_file is not None:  # a new file, owner-only, renamed over any old one
        token_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = token_file.with_name(f".{token_file.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        tmp.replace(token_file)
    return token


def serve(
    model_dir: str,
    host: str,
    port: int,
    dtype: str,
    options: VLLMOptions,
    token_file: Path | None,
    ready_file: Path | None = None,
) -> None:
    """Listen (a taken port fails now, not after loading), load the model, and answer until
    stopped (SIGTERM / Ctrl-C)."""
    import_vllm("frugalrl serve")  # before anything is written
    token = serve_token(token_file)
    loaded: dict[str, VLLMServer] = {}
    try:
        httpd = ThreadingHTTPServer((host, port), handler_class(loaded, token))
    except OSError as e:
        raise UserError(
            f"frugalrl serve: cannot listen on {host}:{port}: {e.strerror or e}"
        ) from None
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    loaded["server"] = VLLMServer(model_dir, dtype, options)
    url = f"http://{host}:{httpd.server_address[1]}"
    if ready_file is not None:  # written last: a reader finds the server listening
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
        tmp.replace(ready_file)
    where = f" (token in {token_file})" if token_file and not os.environ.get(TOKEN_ENV) else ""
    print(f"frugalrl serve: {model_dir} on {url}{where}", file=sys.stderr, flush=True)
    try:
        threading.Event().wait()  # the serving thread answers; this one waits for a signal
    finally:
        httpd.shutdown()
        httpd.server_close()
