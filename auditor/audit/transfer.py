"""The device side of the pass: host batches copied to the device one batch ahead of use."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .prefetch import Batch


def device_batches(host: Iterator[Batch], device: torch.device, cuda=None) -> Iterator[Batch]:
    """Host batches moved to ``device`` one batch ahead of use.

    On CUDA the copy of batch i+1 is issued (non-blocking, from pinned memory) on a side stream
    before batch i is handed out, so copies overlap compute; the compute stream waits only for
    the event recorded after batch i's own copy. On CPU the tensors are used as they are.
    (``cuda`` is ``torch.cuda``; the tests pass a stand-in.)
    """
    if device.type != "cuda":
        yield from host
        return
    cuda = torch.cuda if cuda is None else cuda
    copy_stream = cuda.Stream(device)

    def issue(item: Batch):
        with cuda.stream(copy_stream):
            moved = {role: copy_to(t, device) for role, t in item.tensors.items()}
            copied = cuda.Event()
            copied.record(copy_stream)
        return item._replace(tensors=moved), copied

    def hand_out(issued) -> Batch:
        item, copied = issued
        compute = cuda.current_stream()
        compute.wait_event(copied)
        for tensor in item.tensors.values():
            tensor.record_stream(compute)  # the caching allocator must not reuse it before compute is done
        return item

    pending = None
    for item in host:
        ready, pending = pending, issue(item)
        if ready is not None:
            yield hand_out(ready)
    if pending is not None:
        yield hand_out(pending)


def copy_to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    return tensor.to(device, non_blocking=True)
