"""`lisa.master_weights: fp32`: a bf16 model, fp32 masters and AdamW state for the trainable set only."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

from lisa_plugin import LISACallback
from lisa_plugin.config import config_problems
from lisa_plugin.core.master_weights import CHECKPOINT_KEY, master_state_bound
from lisa_plugin.core.optimizer_state import unwrap_optimizer


def _quality_script():
    """benchmarks/master_weights_quality.py: its tiny model, data and three-way comparison."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "master_weights_quality.py"
    spec = importlib.util.spec_from_file_location("master_weights_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


quality = _quality_script()
tiny_llama, TokenData = quality.tiny_llama, quality.TokenData


def train(tmp_path, lisa=None, *, model=None, resume=None, callbacks=(), **args):
    model = model if model is not None else tiny_llama()
    defaults = dict(output_dir=str(tmp_path), max_steps=8, per_device_train_batch_size=4, learning_rate=1e-3,
                    report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, seed=2, disable_tqdm=True,
                    lr_scheduler_type="constant")
    trainer = Trainer(model=model, args=TrainingArguments(**{**defaults, **args}), train_dataset=TokenData())
    callback = LISACallback(**{"n_layers": 1, "interval_steps": 3, "master_weights": "fp32", **(lisa or {})})
    callback.attach(trainer)
    for extra in callbacks:
        extra.lisa = callback
        trainer.add_callback(extra)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, callback


class SlotProbe(TrainerCallback):
    """After every optimizer step: what sits in the optimizer's slots, its state, and the model's weights."""

    def __init__(self):
        self.lisa, self.records = None, []

    def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        inner = unwrap_optimizer(optimizer)
        masters = self.lisa.switcher.masters.masters
        slots = [q for group in inner.param_groups for q in group["params"]]
        self.records.append(dict(
            trainable={id(p) for p in model.parameters() if p.requires_grad},
            masters=masters,
            in_slots={id(q) for q in slots},
            state_dtypes={v.dtype for st in inner.state.values() for k, v in st.items() if k != "step"},
            state_keys={id(q) for q in inner.state},
            synced=all(torch.equal(p, m.to(p.dtype)) for p, m in masters.values()),
            grads_freed=all(p.grad is None and m.grad is None for p, m in masters.values()),
        ))


def test_masters_exist_only_for_the_trainable_low_precision_set(tmp_path):
    model = tiny_llama()
    model.model.embed_tokens.float()  # as Axolotl upcasts it: an fp32 parameter is its own master
    probe = SlotProbe()
    trainer, lisa = train(tmp_path, model=model, callbacks=[probe], max_steps=7, bf16=True)  # autocast, as Axolotl
    assert len(probe.records) == 7 and len(lisa.switcher.history.switches) == 3
    embed = model.model.embed_tokens.weight
    for record in probe.records:
        low = {i for i in record["trainable"] if i != id(embed)}
        assert set(record["masters"]) == low  # masters: exactly the trainable bf16 parameters
        assert all(m.dtype == torch.float32 for _, m in record["masters"].values())
        master_ids = {id(m) for _, m in record["masters"].values()}
        assert master_ids <= record["in_slots"] and not (low & record["in_slots"])  # masters took the slots
        assert record["state_keys"] == master_ids | {id(embed)}  # release: state only for the trainable set
        assert record["state_dtypes"] == {torch.float32}
        assert record["synced"] and record["grads_freed"]
    # After training the masters are written back and freed, the slots hold the model's own parameters.
    assert not lisa.switcher.masters.masters
    slots = {id(q) for group in unwrap_optimizer(trainer.optimizer).param_groups for q in group["params"]}
    assert slots == {id(p) for p in model.parameters()}


def test_a_switch_writes_back_and_frees_the_leaving_layers(tmp_path):
    seen = []

    class AtSwitch(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
            seen.append((state.global_step, {id(p) for p in model.parameters() if p.requires_grad},
                         {id(q) for q in unwrap_optimizer(optimizer).state}))

    trainer, lisa = train(tmp_path, callbacks=[AtSwitch()], max_steps=9)
    switcher = lisa.switcher
    params = {id(p): p for p in trainer.model.parameters()}
    layer_ids = [{id(p) for p in group} for group in switcher.partition.layers]
    assert [s["step"] for s in switcher.history.switches] == [0, 3, 6]
    for step, trainable, state_keys in seen:
        # on_step_end runs after LISA's switch: no frozen parameter keeps a master's state
        frozen = set(params) - trainable
        assert not (frozen & state_keys)
        assert all(params[i].grad is None for i in frozen)
    previous = [set().union(*(layer_ids[i] for i in s["active"])) for s in switcher.history.switches]
    assert any(a != b for a, b in zip(previous, previous[1:]))  # the set did change at least once
    for switch in switcher.history.switches[1:]:  # the leaving layer's master and moments were freed
        assert switch["optimizer_state_bytes"] < switch["optimizer_state_bytes_before"]


def test_fp32_masters_keep_the_updates_pure_bf16_loses():
    """Same init, data, LISA sequence and lr: bf16 + masters follows the fp32 run far closer than pure bf16."""
    result = quality.compare(steps=12, lr=1e-4)
    gap, dist = result["loss_gap_to_fp32"], result["weight_distance_to_fp32"]
    print("loss gap to fp32:", gap, "weight distance to fp32:", dist)
    assert 0 < gap["bf16+master"] < 0.5 * gap["bf16"]
    assert 0 < dist["bf16+master"] < 0.5 * dist["bf16"]


def test_resume_continues_bit_for_bit(tmp_path):
    straight, _ = train(tmp_path / "a", max_steps=8, save_strategy="steps", save_steps=4)
    checkpoint = tmp_path / "a" / "checkpoint-4"
    groups = torch.load(checkpoint / "optimizer.pt", weights_only=True)["param_groups"]
    assert sum(len(group.get(CHECKPOINT_KEY, {})) for group in groups) > 0  # the masters ride in optimizer.pt
    resumed, _ = train(tmp_path / "b", max_steps=8, resume=str(checkpoint))
    final = dict(resumed.model.named_parameters())
    for name, p in straight.model.named_parameters():
        assert torch.equal(p, final[name]), f"{name} differs after resume"


def test_resume_without_the_fp32_copies_is_not_exact(tmp_path):
    """The control: the same resume from a checkpoint without the fp32 copies (masters rebuilt from the bf16
    weights, moments cast to bf16 by load_state_dict) drifts."""
    straight, _ = train(tmp_path / "a", max_steps=6, save_strategy="steps", save_steps=3)
    checkpoint = tmp_path / "a" / "checkpoint-3"
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    for group in saved["param_groups"]:
        assert group.pop(CHECKPOINT_KEY)
    torch.save(saved, checkpoint / "optimizer.pt")
    resumed, _ = train(tmp_path / "b", max_steps=6, resume=str(checkpoint))
    final = dict(resumed.model.named_parameters())
    assert any(not torch.equal(p, final[n]) for n, p in straight.model.named_parameters())


def test_state_with_masters_is_at_its_analytic_bound_at_every_switch(tmp_path):
    trainer, lisa = train(tmp_path, {"n_layers": 2, "interval_steps": 1}, max_steps=7)
    switcher = lisa.switcher
    switches = switcher.history.switches
    ratios = []
    for previous, switch in zip(switches, switches[1:]):
        bound = master_state_bound(switcher.trainable_parameters(previous["active"]))
        ratios.append(switch["optimizer_state_bytes_before"] / bound)
        assert switch["optimizer_state_bytes"] <= switch["optimizer_state_bytes_before"]
    print("state / analytic bound at each switch:", [round(r, 4) for r in ratios])
    assert len(ratios) == 6 and all(0.98 <= r <= 1.02 for r in ratios)


def test_optimizer_state_keep_moves_state_back_onto_the_frozen_weights(tmp_path):
    trainer, lisa = train(tmp_path, {"optimizer_state": "keep", "n_layers": 1, "interval_steps": 2}, max_steps=8)
    state = unwrap_optimizer(trainer.optimizer).state
    trained = {i for s in lisa.switcher.history.switches for i in s["active"]}
    for layer in trained:  # every layer that trained keeps fp32 moments, now keyed by its bf16 weight
        for p in lisa.switcher.partition.layers[layer]:
            assert state[p]["exp_avg"].dtype == torch.float32


def test_a_float32_model_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"lisa.master_weights: fp32: every parameter LISA trains is already float32"):
        train(tmp_path, model=tiny_llama(torch.float32), max_steps=1)


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({"bf16": True, "fsdp_version": 2, "fsdp_config": {"auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}}, "FSDP"),
        ({"fp16": True}, "fp16: true"),
        ({}, "float32 model has no effect"),
        ({"bf16": True, "optimizer": "adamw_bnb_8bit"}, "optimizer: adamw_bnb_8bit"),
    ],
)
def test_config_check_refuses_what_master_weights_cannot_do(extra, expected):
    data = {"plugins": ["lisa_plugin.LISAPlugin"], "lisa": {"master_weights": "fp32"}, **extra}
    problems = [p for p in config_problems(data) if "master_weights" in p]
    assert len(problems) == 1 and expected in problems[0]
    assert not [p for p in config_problems({**data, "lisa": {}}) if "master_weights" in p]
