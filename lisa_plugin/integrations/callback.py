"""LISA as a ``transformers.TrainerCallback``: the trainer tells it when, ``LayerSwitcher`` does it.

Use with a plain ``Trainer`` or TRL's ``SFTTrainer``::

    from lisa_plugin import LISACallback
    trainer = Trainer(model=model, args=args, train_dataset=ds)
    LISACallback(n_layers=2, interval_steps=20).attach(trainer)
    trainer.train()

The keyword arguments are exactly the keys of the ``lisa:`` block (see ``LisaConfig``),
strategy options included (``LISACallback(strategy="weighted", weights=[...])``).
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

import torch.distributed as dist
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.training_args import ParallelMode

from lisa_plugin.config import LisaConfig
from lisa_plugin.core import distributed, eh_state
from lisa_plugin.core.layers import find_decoder_layers, partition_parameters
from lisa_plugin.core.master_weights import setup_problems
from lisa_plugin.core.switching import LayerSwitcher
from lisa_plugin.manager import get_plugin_manager

LOG = logging.getLogger("lisa_plugin")


def uses_ddp(args) -> bool:
    """Whether a transformers ``Trainer`` with these ``TrainingArguments`` wraps its model in DDP."""
    # FSDP runs under ParallelMode.DISTRIBUTED too; DeepSpeed and FSDP1 are refused here.
    return (
        refuse_sharded_engines(args) is None and args.world_size > 1 and args.parallel_mode == ParallelMode.DISTRIBUTED
    )


def fsdp_version(args) -> int | None:
    """The FSDP version a trainer with these arguments runs, or None without FSDP.

    ``fsdp_config`` (``version`` or Axolotl's ``fsdp_version``) wins, then accelerate's
    ``FSDP_VERSION``; transformers' default is 2 and accelerate's (environment only) is 1.
    """
    in_args = bool(getattr(args, "fsdp", None))
    if not in_args and os.environ.get("ACCELERATE_USE_FSDP", "").lower() != "true":
        return None
    config = getattr(args, "fsdp_config", None) or {}
    version = config.get("version") or config.get("fsdp_version") or os.environ.get("FSDP_VERSION")
    return int(version or (2 if in_args else 1))


DEEPSPEED_REFUSAL = (
    "lisa: DeepSpeed is not supported. DeepSpeed builds its optimizer partitions (fp32 master "
    "weights and Adam moments) once, in `deepspeed.initialize`, from the parameters trainable then, "
    "and never re-partitions when `requires_grad` changes: ZeRO-1/2 fill zero gradients for frozen "
    "parameters, so they keep moving through momentum and weight decay and keep their state; ZeRO-3 "
    "registers its gradient hooks and partitions at init. No public DeepSpeed API re-registers them "
    "per switch, and DeepSpeed is not installed where lisa_plugin is tested, so no such path could be "
    "tested. Use FSDP2 (`fsdp_version: 2`, see the README's Scaling out) or DDP"
)


def refuse_sharded_engines(args) -> str | None:
    """Raise for DeepSpeed and FSDP1 (see README); return ``"fsdp2"`` under FSDP2, else None."""
    if getattr(args, "deepspeed", None) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        raise ValueError(DEEPSPEED_REFUSAL)
    version = fsdp_version(args)
    if version is None:
        return None
    if version != 2:
        raise ValueError(
            f"lisa: FSDP{version} is not supported: it flattens each wrapped module's parameters into one "
            "tensor that is reduced and updated as a whole, while LISA freezes and unfreezes single "
            "decoder layers. Use FSDP2, which shards per parameter: `fsdp_config: {version: 2}` with a "
            "transformers Trainer, `fsdp_version: 2` in an Axolotl config, `fsdp_version: 2` in an "
            "accelerate config"
        )
    return "fsdp2"


class LISACallback(TrainerCallback, ExportableState):
    """Samples ``n_layers`` decoder layers every ``interval_steps`` optimizer steps."""

    def __init__(self, **settings: Any) -> None:
        self.config = LisaConfig(**settings)
        self.switcher: LayerSwitcher | None = None
        self._trainer = None
        self._pending_metrics: dict[str, float] = {}
        self.grad_sync: distributed.ActiveLayerGradSync | None = None  # multi-process only

    def attach(self, trainer) -> "LISACallback":
        """Add this callback to ``trainer`` so that switch metrics go through ``trainer.log``."""
        self.bind(trainer)
        trainer.add_callback(self)
        return self

    def bind(self, trainer) -> "LISACallback":
        """Use ``trainer.log`` for switch metrics and, under DDP, prepare the model before it is wrapped.

        For trainers that add the callback themselves (Axolotl); call before ``train()``.
        """
        self._trainer = trainer
        self._prepare_for_ddp(trainer.args, trainer.model)
        return self

    # -- trainer events --------------------------------------------------------

    def on_init_end(self, args, state, control, model=None, **kwargs):
        # `Trainer(callbacks=[...])`: the model is not wrapped yet.
        self._prepare_for_ddp(args, model)
        return control

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        fsdp2 = refuse_sharded_engines(args) == "fsdp2" or bool(distributed.fsdp2_units(model))
        seed = self.config.seed if self.config.seed is not None else args.seed
        self.switcher = LayerSwitcher(model, self.config, seed)
        self.switcher.check_optimizer(optimizer)
        self.eh_overrides = eh_state.apply(self.config.eh_state, optimizer, self.switcher.partition)
        if self.switcher.masters is not None:
            _check_master_weights(self.switcher, args, fsdp2)
        if fsdp2:
            # FSDP2 reduce-scatters only parameters with a gradient: nothing to sync ourselves.
            distributed.check_fsdp2_layout(model)
        elif uses_ddp(args):
            self._start_grad_sync(model)
        gc_kwargs = args.gradient_checkpointing_kwargs or {}
        if args.gradient_checkpointing and gc_kwargs.get("use_reentrant") and not self.config.train_embeddings:
            # Reentrant checkpointing computes no parameter gradients for a segment whose
            # inputs need none, and with E frozen nothing below the first active layer does.
            LOG.warning(
                "lisa: train_embeddings is false with reentrant gradient checkpointing; enabling "
                "input gradients so active layers still train. Set "
                "gradient_checkpointing_kwargs: {use_reentrant: false} to skip that backward work."
            )
            model.enable_input_require_grads()
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if state.global_step > 0 and isinstance(saved, dict) and saved.get("attributes", {}).get("history"):
            self.switcher.restore(saved["attributes"]["history"])
        self._switch(self.switcher.interval_of(state.global_step), args, state, control, optimizer)
        return control

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        step = state.global_step  # optimizer steps done; the next step to run has this index
        if step < state.max_steps and step % self.config.interval_steps == 0:
            self._switch(self.switcher.interval_of(step), args, state, control, optimizer)
        return control

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # The signal of gradient-driven strategies (adaptive); a no-op for the others.
        if self.switcher is not None:
            self.switcher.record_gradient_norms()
        return control

    def on_step_begin(self, args, state, control, **kwargs):
        # The trainer clears `should_log` at every step begin; keep asking until it logs.
        if self._pending_metrics:
            control.should_log = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Fallback when the trainer was not attached: ride on the trainer's next log call.
        if self._pending_metrics and logs is not None:
            logs.update(self._pending_metrics)
            if state.log_history:
                state.log_history[-1].update(self._pending_metrics)
            self._pending_metrics = {}
        return control

    def on_save(self, args, state, control, **kwargs):
        self._write_history(args, state, os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))
        self._write_history(args, state, args.output_dir)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._write_history(args, state, args.output_dir)
        if self.grad_sync is not None:
            self.grad_sync.remove()
        if self.switcher is not None and self.switcher.masters is not None:
            self.switcher.masters.close()  # weights already hold the masters' values; free the copies
        return control

    # -- state saved in checkpoints (trainer_state.json) -------------------------

    def state(self) -> dict:
        return {
            "args": self.config.model_dump(),
            "attributes": {"history": self.switcher.history.to_json() if self.switcher else None},
        }

    # -- helpers ---------------------------------------------------------------

    def _prepare_for_ddp(self, args, model) -> None:
        if model is None or not uses_ddp(args):  # uses_ddp refuses DeepSpeed and FSDP1 first
            return
        layers = find_decoder_layers(model, self.config.layers_path, get_plugin_manager())
        always = partition_parameters(model, layers).always_trainable(
            self.config.train_embeddings, self.config.train_head
        )
        distributed.exclude_from_ddp(model, always)

    def _start_grad_sync(self, model) -> None:
        from accelerate.state import GradientState

        ignored = distributed.ddp_ignored_parameters(model)
        if not ignored:
            raise ValueError(
                "lisa: under DDP, LISACallback must see the model before the trainer wraps it: use "
                "`LISACallback(...).attach(trainer)` or `Trainer(callbacks=[LISACallback(...)])` "
                "before `trainer.train()`"
            )
        # DDP neither broadcast these at wrap time nor reduces them: both are ours to do.
        distributed.broadcast_parameters(ignored)
        ours = {id(p) for p in ignored}
        if not self.switcher.trainable_parameters([]):
            # E and H both frozen: DDP kept one tensor only to accept the model; idle it and sync everything.
            if self._trainer is None or self._trainer.model_wrapped is model:
                raise ValueError(
                    "lisa: train_embeddings and train_head both false under DDP needs "
                    "`LISACallback(...).attach(trainer)` (the callback then takes over all gradient syncing)"
                )
            distributed.disable_ddp_reducer(self._trainer.model_wrapped)
            ours = {id(p) for p in model.parameters()}
        switcher = self.switcher
        self.grad_sync = distributed.ActiveLayerGradSync(
            params=lambda: [p for p in switcher.trainable_parameters(switcher.active or []) if id(p) in ours],
            should_sync=lambda: GradientState().sync_gradients,
        ).install(model)

    def _switch(self, switch_index, args, state, control, optimizer) -> None:
        event = self.switcher.activate(switch_index, optimizer)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            distributed.check_same_active_set(event.active, event.num_layers, switch_index)
        metrics = event.metrics()
        if self._trainer is not None:
            # trainer.log clears `should_log`; keep the trainer's own loss line for this step.
            should_log = control.should_log
            self._trainer.log(metrics)
            control.should_log = should_log
        else:
            self._pending_metrics = metrics
        self._write_history(args, state, args.output_dir)

    def _write_history(self, args, state, output_dir: str) -> None:
        if self.switcher is None or not state.is_world_process_zero:
            return
        if os.path.isdir(output_dir) or output_dir == args.output_dir:
            self.switcher.history.write(output_dir)


def _check_master_weights(switcher: LayerSwitcher, args, fsdp2: bool) -> None:
    problems = setup_problems(
        switcher.all_parameters(),
        fp16_amp=bool(getattr(args, "fp16", False)),
        sharded=fsdp2,
        multi_process=args.world_size > 1,
    )
    if problems:
        raise ValueError("; ".join(problems))


def _signature_from_config() -> inspect.Signature:
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for name, field in LisaConfig.model_fields.items():
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=field.annotation)
        )
    # the selected strategy's own keys (weights=..., adaptive_decay=...), checked by its options model
    params.append(inspect.Parameter("strategy_options", inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


# `help(LISACallback)` and IDEs show the lisa: keys, taken from the one place that defines them.
LISACallback.__init__.__signature__ = _signature_from_config()
