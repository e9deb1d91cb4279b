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

from collections.abc import Iterable, Iterator
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
    def of(cls, weights: Iterable[tuple[str, torch.Tensor]]) -> WeightsMetadata:
        names, dtypes, shapes = [], [], []
        for name, tensor in weights:
            names.append(name)
            dtypes.append(str(tensor.dtype).removeprefix("torch."))
            shapes.append(list(tensor.shape))
        return cls(names, dtypes, shapes)


def open_group(address: str, port: int, rank: int, timeout_seconds: float) -> dist.ProcessGroup:
    """The sender's (rank 0: hosts the store) or the receiver's end of the transfer group."""
    timeout = timedelta(seconds=timeout_seconds)
    store = dist.TCPStore(address, port, world_size=2, is_master=rank == SENDER, timeout=timeout)
    return dist.ProcessGroupGloo(dist.PrefixStore("frugalrl-weights", store), rank, 2, timeout)


def _broadcast(group: dist.ProcessGroup, tensor: torch.Tensor) -> None:
    options = dist.BroadcastOptions()
    options.rootRank = SENDER
    group.broadcast([tensor], options).wait()


def send_weights(group: dist.ProcessGroup, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Broadcast each tensor (on CPU, contiguous: gloo's requirements) in ``weights``' order."""
    for _name, tensor in weights:
        _broadcast(group, tensor.detach().to("cpu").contiguous())


def receive_weights(
    group: dist.ProcessGroup, metadata: WeightsMetadata
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for each weight the sender broadcasts, as described by ``metadata``."""
    for name, dtype, shape in zip(
        metadata.names, metadata.dtype_names, metadata.shapes, strict=True
    ):
        tensor = torch.empty(shape, dtype=getattr(torch, dtype))
        _broadcast(group, tensor)
        yield name, tensor
