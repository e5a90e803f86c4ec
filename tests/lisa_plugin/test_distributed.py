"""LISA under DDP: two CPU processes (torchrun, gloo) running a plain transformers Trainer.

Axolotl 0.19.0 cannot train multi-process on CPU (its model load sets a rank index as the
device map and transformers' ``caching_allocator_warmup`` fails on it), so the callback is
tested under the Trainer that Axolotl subclasses. One torchrun invocation runs every
scenario of ``ddp_worker.py``; the tests read what each rank wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ddp_worker  # this folder is on sys.path (pytest's rootdir insertion)
from tests.conftest import run_torchrun

WORKER = Path(ddp_worker.__file__)


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    return run_torchrun(WORKER, out, str(out))


def ranks(out: Path, scenario: str) -> list[dict]:
    return [json.loads((out / f"{scenario}-rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.ddp
@pytest.mark.parametrize("scenario", list(ddp_worker.SCENARIOS))
def test_ranks_end_bitwise_identical_and_only_the_active_set_moves(ddp_runs, scenario):
    rank0, rank1 = ranks(ddp_runs, scenario)
    # Rank 1 started from different weights (its own seed): DDP's and LISA's broadcasts fixed that.
    assert rank0["digest"] == rank1["digest"]
    assert rank0["switches"] == rank1["switches"]
    lisa_settings, _ = ddp_worker.SCENARIOS[scenario]
    assert len({tuple(s["active"]) for s in rank0["switches"]}) > 1  # the set did change
    assert rank0["reductions"] == ddp_worker.MAX_STEPS  # once per optimizer step, accumulation or not
    for step in rank0["steps"]:
        layers = {name.split(".")[2] for name in step["changed"] if name.startswith("model.layers.")}
        assert layers == {str(i) for i in step["active"]}  # every active layer moved, no frozen one did
        outside = {name for name in step["changed"] if not name.startswith("model.layers.")}
        expected = set()
        if lisa_settings.get("train_embeddings", True):
            expected.add("model.embed_tokens.weight")
        if lisa_settings.get("train_head", True):
            expected |= {"lm_head.weight", "model.norm.weight"}
        assert outside == expected


@pytest.mark.ddp
@pytest.mark.parametrize("scenario", ["plain", "checkpointing", "no-embeddings-no-head"])
def test_matches_one_process_with_the_same_global_batch(ddp_runs, scenario, tmp_path):
    lisa_settings, overrides = ddp_worker.SCENARIOS[scenario]
    trainer, _ = ddp_worker.make_trainer(tmp_path, lisa_settings, overrides, per_device_batch=4)
    trainer.train()
    ddp = torch.load(ddp_runs / f"{scenario}-weights.pt")
    single = dict(trainer.model.named_parameters())
    assert ddp.keys() == single.keys()
    for name, value in ddp.items():
        torch.testing.assert_close(value, single[name].detach(), rtol=1e-5, atol=1e-6, msg=name)
    initial = ddp_worker.tiny_model(0).state_dict()
    assert any(not torch.equal(ddp[n], initial[n]) for n in ddp if n.startswith("model.layers."))


@pytest.mark.ddp
def test_all_reduced_bytes_scale_with_the_trainable_set_not_the_model(ddp_runs):
    expected_outside = {
        "plain": ("embeddings", "head"),
        "checkpointing": ("embeddings", "head"),
        "reentrant-no-embeddings": ("head",),
        "no-embeddings-no-head": (),
    }
    report = {}
    for scenario, (lisa_settings, _) in ddp_worker.SCENARIOS.items():
        rank0, _ = ranks(ddp_runs, scenario)
        groups = rank0["groups"]
        always = sum(groups[g] for g in expected_outside[scenario])
        active = lisa_settings["n_layers"] * groups["layer"]
        for step in rank0["steps"]:
            assert step["ddp_bytes"] == always  # DDP's reducer: E+H only
            assert step["lisa_bytes"] == active  # ours: the gamma active layers only
        report[scenario] = dict(per_step=always + active, model=groups["model"])
        assert always + active < groups["model"]
    (ddp_runs / "allreduce_bytes.json").write_text(json.dumps(report, indent=1))


FSDP2_AXOLOTL = dict(
    fsdp_version=2,
    fsdp_config={"auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
                 "state_dict_type": "SHARDED_STATE_DICT", "reshard_after_forward": True},
)


@pytest.mark.parametrize(
    "overrides, message",
    [
        *[(dict(deepspeed=f"zero{stage}.json"), r"`deepspeed` cannot be combined with `lisa:`: .*not installed")
          for stage in (1, 2, 3)],
        (dict(fsdp_config={"auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}), r"`fsdp_version: 1` \(FSDP1.*Set `fsdp_version: 2`"),
        (dict(fsdp=["full_shard", "auto_wrap"], fsdp_config={"fsdp_version": 1, "use_orig_params": True}),
         r"`fsdp_version: 1` \(FSDP1.*Set `fsdp_version: 2`"),
        ({**FSDP2_AXOLOTL, "fsdp_config": {"auto_wrap_policy": "SIZE_BASED_WRAP"}},
         r"`fsdp_config.auto_wrap_policy: SIZE_BASED_WRAP` .*one `fully_shard` unit per decoder layer"),
    ],
)
def test_deepspeed_and_fsdp1_are_refused_with_what_to_use_instead(overrides, message):
    from lisa_plugin.integrations.axolotl import LisaArgs

    with pytest.raises(ValueError, match=message):
        LisaArgs.model_validate({"lisa": {"n_layers": 2}, **overrides})


@pytest.mark.parametrize("where", ["top-level", "fsdp_config"])
def test_fsdp2_with_per_layer_wrapping_is_accepted(where):
    from lisa_plugin.config import config_problems
    from lisa_plugin.integrations.axolotl import LisaArgs

    overrides = FSDP2_AXOLOTL if where == "top-level" else {"fsdp_config": {**FSDP2_AXOLOTL["fsdp_config"], "fsdp_version": 2}}
    LisaArgs.model_validate({"lisa": {"n_layers": 2}, **overrides})
    assert config_problems({"plugins": ["lisa_plugin.LISAPlugin"], "lisa": {"n_layers": 2}, **overrides}) == []


@pytest.mark.parametrize(
    "args, env, outcome",
    [
        (dict(deepspeed="ds.json"), {}, "lisa: DeepSpeed is not supported"),
        ({}, {"ACCELERATE_USE_DEEPSPEED": "true"}, "lisa: DeepSpeed is not supported"),
        (dict(fsdp="full_shard", fsdp_config={"version": 1}), {}, "lisa: FSDP1 is not supported: .*Use FSDP2"),
        ({}, {"ACCELERATE_USE_FSDP": "true"}, "lisa: FSDP1 is not supported"),  # accelerate's default is FSDP1
        ({}, {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, "fsdp2"),
        (dict(fsdp=True, fsdp_config={}), {}, "fsdp2"),  # transformers' default is FSDP2
        (dict(fsdp=True, fsdp_config={"fsdp_version": 2}), {}, "fsdp2"),
        ({}, {}, None),
    ],
)
def test_callback_runs_fsdp2_and_refuses_deepspeed_and_fsdp1(monkeypatch, args, env, outcome):
    from types import SimpleNamespace

    from lisa_plugin.integrations.callback import refuse_sharded_engines

    for name in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP", "FSDP_VERSION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = SimpleNamespace(**{"deepspeed": None, "fsdp": "", "fsdp_config": {}, **args})
    if outcome in ("fsdp2", None):
        assert refuse_sharded_engines(args) == outcome
    else:
        with pytest.raises(ValueError, match=outcome):
            refuse_sharded_engines(args)


def test_multi_gpu_example_is_the_single_gpu_run_on_ddp():
    import yaml

    from lisa_plugin.integrations.axolotl import LisaArgs
    from lisa_plugin.tools.axolotl_runner import example_configs_dir

    configs = example_configs_dir()
    ddp = yaml.safe_load((configs / "multi-gpu" / "llama2-7b-lisa-ddp.yml").read_text())
    single = yaml.safe_load((configs / "llama2-7b-lisa.yml").read_text())
    LisaArgs.model_validate(ddp)
    accelerate = yaml.safe_load((configs / "multi-gpu" / "accelerate-ddp.yaml").read_text())
    assert accelerate["distributed_type"] == "MULTI_GPU" and "deepspeed_config" not in accelerate
    global_batch = lambda c, gpus: c["micro_batch_size"] * c["gradient_accumulation_steps"] * gpus  # noqa: E731
    assert global_batch(ddp, accelerate["num_processes"]) == global_batch(single, 1)
    differ = {k for k in ddp.keys() | single.keys() if ddp.get(k) != single.get(k)}
    assert differ == {"gradient_accumulation_steps", "ddp_find_unused_parameters", "output_dir"}
