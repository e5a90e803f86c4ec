"""LISA under DDP: which gradients DDP reduces, and reducing the active layers' ourselves.

DDP builds its reducer once, from the parameters that require a gradient when the model
is wrapped, and LISA changes that set every ``interval_steps`` steps. Left alone, a layer
frozen at wrap time is never reduced once it is sampled (ranks silently diverge), and a
layer trainable at wrap time but frozen later leaves DDP waiting for a gradient that never
comes ("Expected to have finished reduction", or whole-model buckets with
``find_unused_parameters``). So, before the model is wrapped:

* DDP is told to ignore every parameter that is not always trainable (the decoder layers,
  and E or H when they are off); its reducer then holds only E+H, a fixed set, and
  overlaps their all-reduce with the backward pass as usual;
* :class:`ActiveLayerGradSync` all-reduces the gradients of the active layers once per
  optimizer step, at the end of the backward pass of the last micro-batch of the
  accumulation window (the one DDP would sync), in flat buckets, averaged over the group.
  That is before the trainer clips gradients, so clipping, the optimizer and gradient-driven
  strategies all see the same reduced gradients on every rank.

Bytes moved per step are E+H (DDP) plus the gamma active layers (here), not the model.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

# Same default as DDP's `bucket_cap_mb`: the largest flat copy made at once.
BUCKET_BYTES = 25 * 1024 * 1024


def exclude_from_ddp(model: nn.Module, keep: Iterable[nn.Parameter]) -> list[str]:
    """Make DDP reduce only ``keep``: every other parameter of ``model`` is ignored by DDP.

    Must run before the model is wrapped. Returns the ignored names. When ``keep`` is
    empty (E and H both frozen), DDP would refuse the model, so the smallest parameter is
    left to it; :func:`disable_ddp_reducer` then keeps its reducer idle.
    """
    from torch.nn.parallel import DistributedDataParallel

    keep_ids = {id(p) for p in keep}
    named = list(model.named_parameters())
    ignored = [name for name, p in named if id(p) not in keep_ids]
    if len(ignored) == len(named) and named:
        # DDP refuses a model with nothing to reduce; leave it the smallest tensor.
        smallest = min(named, key=lambda item: item[1].numel())[0]
        ignored.remove(smallest)
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
    return ignored


def ddp_ignored_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters :func:`exclude_from_ddp` took away from DDP (none if it did not run)."""
    ignored = set(getattr(model, "_ddp_params_and_buffers_to_ignore", ()))
    return [p for name, p in model.named_parameters() if name in ignored]


def disable_ddp_reducer(wrapped: nn.Module) -> None:
    """Keep DDP's reducer idle for good (``no_sync`` restores the value it found)."""
    wrapped.require_backward_grad_sync = False


@torch.no_grad()
def broadcast_parameters(params: list[nn.Parameter], src: int = 0) -> None:
    """Copy rank ``src``'s values of ``params`` to every rank (DDP does not for ignored ones)."""
    for bucket in _buckets([p.data for p in params]):
        flat = torch._utils._flatten_dense_tensors(bucket)
        dist.broadcast(flat, src=src)
        for tensor, synced in zip(bucket, torch._utils._unflatten_dense_tensors(flat, bucket)):
            tensor.copy_(synced)


class ActiveLayerGradSync:
    """All-reduces (averages) the gradients of ``params()`` at the end of each syncing backward.

    ``params`` is asked at every reduction, so it follows the switches. A forward hook on the
    model puts a gradient hook on its output (loss and logits); that hook runs at the start
    of the outer backward pass, even with reentrant gradient checkpointing, and queues the
    reduction to run when the whole backward pass is done.
    """

    def __init__(
        self,
        params: Callable[[], list[nn.Parameter]],
        should_sync: Callable[[], bool],
        group=None,
        bucket_bytes: int = BUCKET_BYTES,
    ) -> None:
        self.params = params
        self.should_sync = should_sync
        self.group = group
        self.bucket_bytes = bucket_bytes
        self.bytes_reduced = 0  # payload all-reduced so far, summed over reductions
        self.reductions = 0
        self._queued = False
        self._handle = None

    def install(self, model: nn.Module) -> "ActiveLayerGradSync":
        self._handle = model.register_forward_hook(self._on_forward)
        return self

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _on_forward(self, module, inputs, output) -> None:
        if not torch.is_grad_enabled() or not self.should_sync():
            return
        for tensor in _output_tensors(output):
            tensor.register_hook(self._on_output_grad)

    def _on_output_grad(self, grad):
        if not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._reduce_after_backward)
        return grad

    def _reduce_after_backward(self) -> None:
        self._queued = False
        self.reduce()

    @torch.no_grad()
    def reduce(self) -> int:
        """Average the present gradients of ``params()`` over the group; return the bytes sent."""
        grads = [p.grad for p in self.params() if p.grad is not None]
        size = dist.get_world_size(self.group)
        sent = 0
        for bucket in _buckets(grads, self.bucket_bytes):
            flat = torch._utils._flatten_dense_tensors(bucket)
            flat.div_(size)
            dist.all_reduce(flat, group=self.group)
            for grad, reduced in zip(bucket, torch._utils._unflatten_dense_tensors(flat, bucket)):
                grad.copy_(reduced)
            sent += flat.numel() * flat.element_size()
        self.bytes_reduced += sent
        self.reductions += 1
        return sent


def _output_tensors(output) -> list[torch.Tensor]:
    """The model outputs a backward pass can start from: the loss, or the logits the loss is computed from."""
    if isinstance(output, torch.Tensor):
        candidates = [output]
    elif isinstance(output, dict):
        candidates = [output.get("loss"), output.get("logits")]
    elif isinstance(output, (tuple, list)):
        candidates = list(output[:2])
    else:
        candidates = []
    return [t for t in candidates if isinstance(t, torch.Tensor) and t.requires_grad]


def _buckets(tensors: list[torch.Tensor], cap: int = BUCKET_BYTES) -> Iterable[list[torch.Tensor]]:
    """Consecutive runs of same-dtype tensors of at most ``cap`` bytes (one tensor may exceed it)."""
    bucket: list[torch.Tensor] = []
    size = 0
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and (size + nbytes > cap or tensor.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(tensor)
        size += nbytes
    if bucket:
        yield bucket
