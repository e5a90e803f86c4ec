"""LISACallback under a plain transformers Trainer (in process, tiny model)."""

import inspect
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

from lisa_plugin import LISACallback, LisaConfig
from lisa_plugin.core.optimizer_state import adamw_state_bound, unwrap_optimizer


class TokenData(torch.utils.data.Dataset):
    def __init__(self, n=64, length=24, vocab=500, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, vocab, (n, length), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class Probe(TrainerCallback):
    """Records, at every optimizer step, which parameters have a gradient and which changed."""

    def __init__(self, lisa):
        self.lisa = lisa
        self.steps = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        self._before = {n: p.detach().clone() for n, p in model.named_parameters()}
        self._with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
        self._requires = {n for n, p in model.named_parameters() if p.requires_grad}

    def on_optimizer_step(self, args, state, control, model=None, **kw):
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, self._before[n])}
        self.steps.append(
            dict(step=state.global_step, active=list(self.lisa.switcher.active), grad=self._with_grad,
                 requires=self._requires, changed=changed)
        )


def layer_names(active, prefix="model.layers"):
    return lambda name: any(name.startswith(f"{prefix}.{i}.") for i in active)


def make_trainer(tiny_root, tmp_path, lisa_kwargs, *, attach=True, probe=True, **args):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_root / "model")
    defaults = dict(
        output_dir=str(tmp_path / "out"), max_steps=12, per_device_train_batch_size=2, learning_rate=1e-3,
        report_to=[], save_strategy="no", logging_steps=100, use_cpu=True, seed=3, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=TrainingArguments(**{**defaults, **args}), train_dataset=TokenData())
    lisa = LISACallback(**lisa_kwargs)
    if attach:
        lisa.attach(trainer)
    else:
        trainer.add_callback(lisa)
    p = Probe(lisa)
    if probe:
        trainer.add_callback(p)
    return trainer, lisa, p


def always_names(model, lisa):
    ids = {id(p) for p in lisa.switcher._always}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_exactly_the_active_set_trains_at_every_step_with_grad_accumulation(tiny_root, tmp_path):
    trainer, lisa, probe = make_trainer(
        tiny_root, tmp_path, dict(n_layers=2, interval_steps=3), gradient_accumulation_steps=2, max_steps=10
    )
    trainer.train()
    switches = lisa.switcher.history.switches
    assert [s["step"] for s in switches] == [0, 3, 6, 9]  # K counts optimizer steps; no extra switch at 1
    eh = always_names(trainer.model, lisa)
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"} <= eh
    for record in probe.steps:
        expected_active = switches[record["step"] // 3]["active"]
        assert record["active"] == expected_active
        in_active = layer_names(expected_active)
        trainable = {n for n, _ in trainer.model.named_parameters() if in_active(n) or n in eh}
        assert record["grad"] == trainable
        assert record["requires"] == trainable
        assert record["changed"] <= trainable  # frozen layers are bitwise unchanged by the step
        assert any(in_active(n) for n in record["changed"])


def test_release_keeps_state_at_the_analytic_bound_and_keep_grows(tiny_root, tmp_path):
    results = {}
    for mode in ("release", "keep"):
        trainer, lisa, _ = make_trainer(
            tiny_root, tmp_path / mode, dict(n_layers=2, interval_steps=1, optimizer_state=mode), max_steps=13,
            probe=False,
        )
        trainer.train()
        model = trainer.model
        switches = lisa.switcher.history.switches
        assert len(switches) >= 12
        layers = model.model.layers
        eh = lisa.switcher._always
        bounds = [
            adamw_state_bound(eh + [p for i in prev["active"] for p in layers[i].parameters()])
            for prev in switches[:-1]
        ]
        results[mode] = ([s["optimizer_state_bytes_before"] for s in switches[1:]], bounds)
        state = unwrap_optimizer(trainer.optimizer).state
        if mode == "release":
            # After the last step, state exists only for what is trainable now.
            trainable = {id(p) for p in model.parameters() if p.requires_grad}
            assert {id(p) for p in state} <= trainable
    measured, bounds = results["release"]
    assert measured == bounds
    kept, _ = results["keep"]
    assert kept == sorted(kept) and kept[-1] > max(measured)
    assert kept[0] == measured[0]  # same seed, same first interval


def test_history_file_and_logged_metrics(tiny_root, tmp_path):
    trainer, lisa, _ = make_trainer(
        tiny_root, tmp_path, dict(n_layers=1, interval_steps=4), probe=False, seed=9, logging_steps=1
    )
    trainer.train()
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == list(range(1, 13))
    data = json.loads((tmp_path / "out" / "lisa_history.json").read_text())
    assert data["format"] == "lisa_history/1"
    assert data["settings"] == {**LisaConfig(n_layers=1, interval_steps=4).model_dump(), "seed": 9}
    assert data["num_layers"] == 6 and data["layers_path"] == "model.layers"
    assert [s["step"] for s in data["switches"]] == [0, 4, 8]
    assert sum(data["activation_counts"]) == 3
    assert all(s["trainable_params"] == data["always_trainable_params"] + data["layer_params"][s["active"][0]] for s in data["switches"])
    logged = [e for e in trainer.state.log_history if "lisa/switch" in e]
    assert [e["lisa/switch"] for e in logged] == [0.0, 1.0, 2.0]
    assert [e["lisa/active_layer_0"] for e in logged] == [float(s["active"][0]) for s in data["switches"]]


def test_metrics_reach_the_log_without_attach(tiny_root, tmp_path):
    trainer, lisa, _ = make_trainer(
        tiny_root, tmp_path, dict(n_layers=1, interval_steps=4), attach=False, probe=False
    )
    trainer.train()
    logged = [e for e in trainer.state.log_history if "lisa/switch" in e]
    assert [e["lisa/switch"] for e in logged] == [0.0, 1.0, 2.0]


def test_resume_mid_interval_restores_the_active_set_and_sequence(tiny_root, tmp_path):
    lisa_kwargs = dict(n_layers=2, interval_steps=3)
    full, full_lisa, _ = make_trainer(
        tiny_root, tmp_path / "a", lisa_kwargs, probe=False, save_strategy="steps", save_steps=4
    )
    full.train()
    checkpoint = tmp_path / "a" / "out" / "checkpoint-4"
    assert (checkpoint / "lisa_history.json").exists()
    resumed, lisa, probe = make_trainer(tiny_root, tmp_path / "b", lisa_kwargs)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert lisa.switcher.history.switches == full_lisa.switcher.history.switches
    assert [r["step"] for r in probe.steps] == list(range(4, 12))  # 0-based step index
    switches = lisa.switcher.history.switches
    for record in probe.steps:  # step 5 is mid-interval [3, 6): the restored set trains it
        active = switches[record["step"] // 3]["active"]
        assert record["active"] == active
        assert all(layer_names(active)(n) or not n.startswith("model.layers.") for n in record["grad"])


def test_frozen_embeddings_and_head_with_gradient_checkpointing(tiny_root, tmp_path):
    trainer, lisa, probe = make_trainer(
        tiny_root, tmp_path, dict(n_layers=1, interval_steps=2, train_embeddings=False, train_head=False),
        gradient_checkpointing=True, max_steps=4,
    )
    trainer.train()
    for record in probe.steps:
        assert record["grad"] and all(layer_names(record["active"])(n) for n in record["grad"])
        assert record["changed"] == record["grad"]


def test_signature_is_the_lisa_block():
    params = inspect.signature(LISACallback).parameters
    assert list(params) == [*LisaConfig.model_fields, "strategy_options"]
    assert all(params[k].default == f.default for k, f in LisaConfig.model_fields.items())
    assert params["strategy_options"].kind is inspect.Parameter.VAR_KEYWORD  # weights=..., adaptive_decay=...


def test_unsupported_optimizer_is_refused(tiny_root, tmp_path):
    trainer, _, _ = make_trainer(tiny_root, tmp_path, dict(), optim="sgd", probe=False)
    with pytest.raises(ValueError, match=r"optimizer torch.optim.sgd.SGD is not supported.*adamw_torch"):
        trainer.train()


def test_too_many_layers_is_refused(tiny_root, tmp_path):
    trainer, _, _ = make_trainer(tiny_root, tmp_path, dict(n_layers=7), probe=False)
    with pytest.raises(ValueError, match=r"lisa.n_layers: 7 is more than the 6 decoder layers"):
        trainer.train()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_layers=0), "n_layers"),
        (dict(interval_steps=0), "interval_steps"),
        (dict(strategy="unifrom"), "unknown strategy 'unifrom'. Did you mean 'uniform'"),
        (dict(layers_path="model..layers"), "lisa.layers_path: 'model..layers' is not a dotted"),
        (dict(optimizer_state="drop"), "optimizer_state"),
        (dict(n_layer=2), "n_layer"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        LISACallback(**kwargs)


@pytest.mark.parametrize("optim", ["adamw_torch", "adamw_torch_fused", "adamw_bnb_8bit"])
def test_release_works_with_the_supported_optimizers(tiny_root, tmp_path, optim):
    trainer, lisa, probe = make_trainer(
        tiny_root, tmp_path, dict(n_layers=1, interval_steps=2), optim=optim, max_steps=6
    )
    trainer.train()
    for record in probe.steps:
        assert record["changed"] <= record["grad"]  # nothing frozen moved
    state = unwrap_optimizer(trainer.optimizer).state
    trainable = {id(p) for p in trainer.model.parameters() if p.requires_grad}
    assert state and {id(p) for p in state if state[p]} <= trainable
    switches = lisa.switcher.history.switches
    assert all(s["optimizer_state_bytes"] < s["optimizer_state_bytes_before"] for s in switches[1:] if s["active"] != switches[switches.index(s) - 1]["active"])


def test_trl_sft_trainer(tiny_root, tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from lisa_plugin.tools.corpus import paragraphs

    tokenizer = AutoTokenizer.from_pretrained(tiny_root / "model")
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_root / "model"),
        args=SFTConfig(
            output_dir=str(tmp_path / "sft"), max_steps=4, per_device_train_batch_size=2, report_to=[],
            save_strategy="no", use_cpu=True, max_length=64, disable_tqdm=True, logging_steps=100,
        ),
        train_dataset=Dataset.from_dict({"text": paragraphs(16)}),
        processing_class=tokenizer,
    )
    lisa = LISACallback(n_layers=1, interval_steps=2).attach(trainer)
    trainer.train()
    data = json.loads((tmp_path / "sft" / "lisa_history.json").read_text())
    assert [s["step"] for s in data["switches"]] == [0, 2]
    assert [s["active"] for s in data["switches"]] == [s["active"] for s in lisa.switcher.history.switches]
