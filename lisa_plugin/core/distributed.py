"""LISA on several processes: DDP (which gradients it reduces) and FSDP2 (``fully_shard``).

**DDP** builds its reducer once, from the parameters that require a gradient when the model
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

**FSDP2** needs no help with gradients: each ``fully_shard`` unit carries the sharded
parameter's ``requires_grad`` to the unsharded one at every all-gather, and reduce-scatters
only the parameters that got a gradient. Toggling ``requires_grad`` on the sharded (DTensor)
parameters after the optimizer step is therefore all LISA does; the optimizer state it
releases is each rank's local shard. What must hold is the layout (:func:`check_fsdp2_layout`:
a tied embedding/head pair in one unit) and that every rank picks the same layers
(:func:`check_same_active_set`), or the ranks' collectives stop matching. Sharded checkpoints
go through ``torch.distributed.checkpoint`` (:func:`save_sharded_checkpoint`,
:func:`load_sharded_checkpoint`).
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


# -- FSDP2 (`torch.distributed.fsdp.fully_shard`) ------------------------------


def fsdp2_units(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that ``fully_shard`` was applied to (outermost first)."""
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def _unit_owners(model: nn.Module) -> dict[int, list[str]]:
    """Parameter id -> names of the ``fully_shard`` units whose own group holds it."""
    from torch.distributed.fsdp import FSDPModule

    owners: dict[int, list[str]] = {}
    for name, unit in model.named_modules():
        if not isinstance(unit, FSDPModule):
            continue
        stack = [unit]
        while stack:
            module = stack.pop()
            for p in module._parameters.values():
                names = owners.setdefault(id(p), []) if p is not None else []
                if p is not None and (name or "<root>") not in names:
                    names.append(name or "<root>")
            stack.extend(c for c in module.children() if not isinstance(c, FSDPModule))
    return owners


def check_fsdp2_layout(model: nn.Module) -> None:
    """Refuse FSDP2 layouts LISA cannot train correctly: a model with no ``fully_shard`` unit,
    parameters outside every unit, and tied input/output embeddings split over two units."""
    if not fsdp2_units(model):
        raise ValueError(
            "lisa: FSDP2 expected, but no module of the model was passed to `fully_shard`; shard each "
            "decoder layer, then the whole model (`lisa_plugin.core.distributed.shard_for_lisa`)"
        )
    owners = _unit_owners(model)
    outside = [n for n, p in model.named_parameters() if id(p) not in owners]
    if outside:
        raise ValueError(f"lisa: parameters {outside[:4]} are in no `fully_shard` unit; also shard the root module")
    split = [(n, owners[id(p)]) for n, p in model.named_parameters() if len(owners.get(id(p), ())) > 1]
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    head = getattr(model, "get_output_embeddings", lambda: None)()
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    if tied and embeddings is not None and head is not None and embeddings.weight is not head.weight:
        split.append(("tied embeddings", ["input embeddings and LM head now hold different tensors"]))
    if split:
        raise ValueError(
            f"lisa: under FSDP2 a tied embedding/head pair must sit in one `fully_shard` unit; {split[0][0]} is "
            f"split ({split[0][1]}). Do not shard the embeddings or the head on their own: leave them to the "
            "root unit (wrap only the decoder layers)"
        )


def shard_for_lisa(model: nn.Module, layers: nn.ModuleList, **fully_shard_kwargs) -> nn.Module:
    """``fully_shard`` each decoder layer, then the root (E, H and a tied pair land in the root unit).

    One unit per decoder layer is what makes a frozen layer cost only its all-gather: it is
    never reduce-scattered and holds no optimizer state. ``fully_shard_kwargs`` go to every
    call (``mesh``, ``mp_policy``, ``reshard_after_forward``, ...).
    """
    from torch.distributed.fsdp import fully_shard

    for layer in layers:
        fully_shard(layer, **fully_shard_kwargs)
    fully_shard(model, **fully_shard_kwargs)
    check_fsdp2_layout(model)
    return model


def _collective_device(group=None) -> torch.device:
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_same_active_set(active: list[int], num_layers: int, switch_index: int, group=None) -> None:
    """Raise on every rank unless all ranks chose ``active`` for interval ``switch_index``.

    One all-gather of ``num_layers + 1`` integers per switch. Ranks that disagree would
    all-gather the same layers but reduce-scatter different ones (FSDP2), or all-reduce
    buckets of different layers (DDP): a hang or silently wrong gradients, not an error.
    """
    mine = torch.zeros(num_layers + 1, dtype=torch.int64, device=_collective_device(group))
    mine[list(active)] = 1
    mine[-1] = switch_index
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, mine, group=group)
    if all(torch.equal(g, gathered[0]) for g in gathered):
        return
    seen = "; ".join(
        f"rank {r}: interval {int(g[-1])} layers {torch.nonzero(g[:-1]).flatten().tolist()}"
        for r, g in enumerate(gathered)
    )
    raise RuntimeError(
        f"lisa: the ranks chose different decoder layers ({seen}). Every rank must use the same "
        "`lisa.seed` (or trainer `seed`) and the same `lisa:` settings; otherwise the ranks' "
        "gradient collectives no longer match"
    )


def save_sharded_checkpoint(path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Save the model and optimizer shards of every rank with ``torch.distributed.checkpoint``.

    The optimizer part holds only the state LISA kept (E, H and the active layers).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(path))


def load_sharded_checkpoint(path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load what :func:`save_sharded_checkpoint` wrote, into a model sharded the same way.

    ``torch.distributed.checkpoint.state_dict`` fills an optimizer without state by a zero-lr
    step of every parameter that requires a gradient, and then expects the checkpoint to hold
    state for each: with LISA it holds only the kept state. So the entries the checkpoint
    has are created first (zeros, overwritten by the load), and nothing else is. Call it after
    the resumed interval's layers are switched on (``LISACallback.on_train_begin``).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, get_state_dict, set_model_state_dict, set_optimizer_state_dict,
    )

    from lisa_plugin.core.optimizer_state import unwrap_optimizer

    saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    params = dict(model.named_parameters())
    state = unwrap_optimizer(optimizer).state
    state.clear()
    for key, meta in saved.items():
        if not key.startswith("optim.state."):
            continue
        name, field = key[len("optim.state."):].rsplit(".", 1)
        p = params[name]
        size = tuple(meta.size)
        state.setdefault(p, {})[field] = (
            torch.zeros_like(p) if size == tuple(p.shape) else torch.zeros(size, dtype=meta.properties.dtype)
        )
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.load({"model": model_state, "optim": optim_state}, checkpoint_id=str(path))
    set_model_state_dict(model, model_state)
    # Not strict: layers switched on at the saved step have no state yet, as in the run that saved it.
    set_optimizer_state_dict(model, optimizer, optim_state, options=StateDictOptions(strict=False))
