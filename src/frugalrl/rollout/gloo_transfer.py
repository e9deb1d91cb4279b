"""Weights from the trainer to a vLLM server over a two-process gloo group (any machine).

vLLM's weight-transfer API (``init_weight_transfer_engine`` → ``start_weight_update`` →
``update_weights`` → ``finish_weight_update``) leaves the transport to a backend; its built-in
ones (NCCL, CUDA IPC) need CUDA. This is the same data plane over torch's gloo: the trainer is
rank 0 and hosts the rendezvous store, the server is rank 1; the update's metadata (names,
dtypes, shapes) travels over HTTP, the tensors by ``broadcast``, one at a time, so neither side
holds a second copy of the model. It needs nothing but torch, so a trainer without vLLM
installed can send. The group is its own ``ProcessGroupGloo`` object: it does not touch the
trainer's default process group (data-parallel training keeps its own).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

SENDER, RECEIVER = 0, 1


@dataclass
class WeightsMetadata:
    """What the receiver allocates before each broadcast: the update's ``update_info``."""

    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]

    @classmethod
    def of(
        cls, weights: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype | None = None
    ) -> WeightsMetadata:
        """The metadata of ``weights``, sent as ``dtype`` when given (else their own)."""
        names, dtypes, shapes = [], [], []
        for name, tensor in weights:
            names.append(name)
            dtypes.append(str(dtype or tensor.dtype).removeprefix("torch."))
            shapes.append(list(tensor.shape))
        return cls(names, dtypes, shapes)


def sender_store(address: str, timeout_seconds: float) -> dist.TCPStore:
    """The sender's rendezvous store on a port the OS picks (``store.port``): no window in
    which another process can take a port chosen earlier."""
    timeout = timedelta(seconds=timeout_seconds)
    return dist.TCPStore(
        address, 0, world_size=2, is_master=True, timeout=timeout, wait_for_workers=False
    )


def receiver_store(address: str, port: int, timeout_seconds: float) -> dist.TCPStore:
    timeout = timedelta(seconds=timeout_seconds)
    return dist.TCPStore(address, port, world_size=2, is_master=False, timeout=timeout)


def open_group(
    store: dist.Store,
    rank: int,
    key: str,
    timeout_seconds: float,
    peer_failed: Callable[[], None] = lambda: None,
) -> dist.ProcessGroup:
    """This end of the transfer group. ``key`` (a per-run secret, sent over the authenticated
    HTTP route) names the store's keys, so a process that reaches the store's port without it
    cannot join. The sender waits for the receiver to arrive in short slices, calling
    ``peer_failed`` (which raises if the receiver's side has already failed) between them,
    instead of blocking for the whole timeout."""
    prefixed = dist.PrefixStore(f"frugalrl-weights/{key}", store)
    if rank == RECEIVER:
        prefixed.set("arrived", "1")
    else:
        deadline = time.monotonic() + timeout_seconds
        while not prefixed.check(["arrived"]):
            peer_failed()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the receiver did not join within {timeout_seconds:.0f} s")
            time.sleep(0.05)
    return dist.ProcessGroupGloo(prefixed, rank, 2, timedelta(seconds=timeout_seconds))


def _broadcast(group: dist.ProcessGroup, tensor: torch.Tensor) -> None:
    options = dist.BroadcastOptions()
    options.rootRank = SENDER
    group.broadcast([tensor], options).wait()


def send_weights(
    group: dist.ProcessGroup,
    weights: Iterable[tuple[str, torch.Tensor]],
    peer_failed: Callable[[], None] = lambda: None,
) -> None:
    """Broadcast each tensor (on CPU, contiguous: gloo's requirements) in ``weights``' order,
    checking ``peer_failed`` before each."""
    for _name, tensor in weights:
        peer_failed()
        _broadcast(group, tensor.detach().to("cpu").contiguous())


def receive_weights(
    group: dist.ProcessGroup, metadata: WeightsMetadata
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for each weight the sender broadcasts, as described by ``metadata``.
    Consume it to the end even if using a tensor fails, or the sender blocks mid-broadcast."""
    for name, dtype, shape in zip(
        metadata.names, metadata.dtype_names, metadata.shapes, strict=True
    ):
        tensor = torch.empty(shape, dtype=getattr(torch, dtype))
        _broadcast(group, tensor)
        yield name, tensor
