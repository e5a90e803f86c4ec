"""LISA under FSDP2: two CPU processes (torchrun, gloo) running ``benchmarks/fsdp2_traffic.py --checks``.

The worker shards a tiny Llama one ``fully_shard`` unit per decoder layer plus the root, drives
``LISACallback`` with the events a Trainer sends, and trains with accumulation and clipping (see
its docstring); one launch runs every scenario and the tests read what each rank wrote. A
transformers Trainer cannot run FSDP on CPU (it needs ``use_cpu`` for gloo, which turns FSDP off),
and Axolotl cannot train multi-process on CPU at all, so the Axolotl path is checked as config.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.conftest import run_torchrun

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "fsdp2_traffic.py"
WORLD = 2


def load_worker():
    spec = importlib.util.spec_from_file_location("fsdp2_traffic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp2")
    return run_torchrun(SCRIPT, out, "--checks", str(out), nproc=WORLD)


def ranks(out: Path, name: str) -> list[dict]:
    return [json.loads((out / f"{name}-rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.mark.ddp
@pytest.mark.parametrize("name", ["lisa", "tied-mixed-adaptive"])
def test_only_the_active_set_moves_and_state_is_the_bound_over_world_size(fsdp_runs, name):
    records = ranks(fsdp_runs, name)
    assert len({r["digest"] for r in records}) == 1  # whole weights, gathered on each rank
    assert records[0]["switches"] == records[1]["switches"]
    assert len({tuple(s["active"]) for s in records[0]["steps"]}) > 1  # the set did change
    tied = records[0]["spec"]["tied"]
    for record in records:
        for step in record["steps"]:
            # each rank sees its own shards: every active layer moved there, no frozen one did
            layers = {n.split(".")[2] for n in step["changed"] if n.startswith("model.layers.")}
            assert layers == {str(i) for i in step["active"]}
            outside = {n for n in step["changed"] if not n.startswith("model.layers.")}
            assert outside == {"model.embed_tokens.weight", "model.norm.weight"} | (set() if tied else {"lm_head.weight"})
            assert 0.98 * step["state_bound"] <= step["state_bytes"] <= 1.02 * step["state_bound"]


@pytest.mark.ddp
def test_reduce_scatter_carries_the_trainable_set_all_gather_the_model(fsdp_runs):
    lisa, full = ranks(fsdp_runs, "lisa")[0], ranks(fsdp_runs, "full")[0]
    groups, spec = lisa["groups"], lisa["spec"]
    trainable = groups["embeddings"] + groups["head"] + spec["gamma"] * groups["layer"]
    for step in lisa["steps"]:
        assert step["reduce_scatter_bytes"] == trainable  # once per optimizer step (accumulation: no sync)
    for step in full["steps"]:
        assert step["reduce_scatter_bytes"] == groups["model"]
        assert step["state_bytes"] == step["state_bound"]
    # Forward all-gathers every unit, backward re-gathers the decoder layers (frozen ones too:
    # the gradient passes through them), per micro-batch, for LISA and full alike.
    gathered = spec["accumulation"] * (groups["model"] + spec["layers"] * groups["layer"])
    assert {s["all_gather_bytes"] for s in lisa["steps"] + full["steps"]} == {gathered}
    full_state = max(s["state_bytes"] for s in full["steps"])
    assert max(s["state_bytes"] for s in lisa["steps"]) < full_state / 2
    # The planner's per-GPU AdamW state under FSDP2 (lisa-memory --fsdp-gpus) against the measured one.
    from lisa_plugin.tools import memory

    shape = memory.ModelShape("tiny", spec["vocab"], spec["hidden"], spec["layers"], 4, 4, spec["intermediate"])
    planned = memory.fsdp2_plan(shape, "lisa", memory.Settings(dtype="fp32", gamma=spec["gamma"]), 2).optimizer
    measured = max(s["state_bytes"] for s in lisa["steps"])
    assert 0.98 <= planned / measured <= 1.02, (planned, measured)
    report = dict(lisa_reduce_scatter=trainable, full_reduce_scatter=groups["model"], all_gather=gathered,
                  lisa_state=max(s["state_bytes"] for s in lisa["steps"]), full_state=full_state)
    (fsdp_runs / "traffic.json").write_text(json.dumps(report, indent=1))


@pytest.mark.ddp
@pytest.mark.parametrize("at", [3, 4])
def test_resume_from_sharded_checkpoint_continues_bitwise(fsdp_runs, at):
    straight, resumed = ranks(fsdp_runs, "lisa"), ranks(fsdp_runs, f"resume-{at}")
    for a, b in zip(straight, resumed):
        assert b["digest"] == a["digest"]  # weights, from other initial weights plus the checkpoint
        assert b["optimizer_digest"] == a["optimizer_digest"]  # this rank's AdamW shards
        assert [s["active"] for s in b["steps"]] == [s["active"] for s in a["steps"][at:]]
        assert b["switches"] == a["switches"]


@pytest.mark.ddp
def test_ranks_with_different_seeds_are_stopped(fsdp_runs):
    errors = [json.loads((fsdp_runs / f"different-seeds-rank{r}.json").read_text())["error"] for r in range(WORLD)]
    for error in errors:
        assert error is not None and "ranks chose different decoder layers" in error
        assert "rank 0:" in error and "rank 1:" in error


@pytest.mark.ddp
def test_matches_one_process_with_the_same_global_batch(fsdp_runs, tmp_path):
    worker = load_worker()
    spec = worker.Spec()
    single_spec = replace(spec, batch=spec.batch * WORLD)  # the same rows as both ranks together
    model = worker.tiny_llama(single_spec, seed=0)
    result = worker.train(model, single_spec, True, out=tmp_path)
    sharded = torch.load(fsdp_runs / "lisa-weights.pt")
    single = dict(model.named_parameters())
    worst = max((sharded[n] - single[n].detach()).abs().max().item() for n in sharded)
    (fsdp_runs / "single_process.json").write_text(json.dumps({"largest_weight_difference": worst}))
    assert worst < 1e-5, f"largest |FSDP2 - one process| = {worst}"
    assert [s["active"] for s in result["steps"]] == [s["active"] for s in ranks(fsdp_runs, "lisa")[0]["steps"]]
    initial = worker.tiny_llama(spec, seed=0).state_dict()
    assert any(not torch.equal(sharded[n], initial[n]) for n in sharded if n.startswith("model.layers."))


def test_per_rank_bound_is_the_bound_over_world_size():
    from lisa_plugin.core.optimizer_state import adamw_state_bound, adamw_state_bound_per_rank

    params = [torch.nn.Parameter(torch.zeros(64, 32)), torch.nn.Parameter(torch.zeros(32))]
    assert adamw_state_bound_per_rank(params, 1) == adamw_state_bound(params)
    assert adamw_state_bound_per_rank(params, 4) == 2 * (64 * 32 + 32) * 4 // 4 + 2 * 4
    with pytest.raises(ValueError, match="world_size"):
        adamw_state_bound_per_rank(params, 0)


FSDP2_KEYS = ("fsdp_version", "fsdp_config")


@pytest.mark.parametrize("name", ["llama2-70b-lisa-fsdp2.yml", "llama3-8b-lisa-fsdp2.yml"])
def test_fsdp2_example_configs(name):
    import yaml

    from lisa_plugin.config import config_problems
    from lisa_plugin.integrations.axolotl import LisaArgs
    from lisa_plugin.tools.axolotl_runner import example_configs_dir

    configs = example_configs_dir()
    cfg = yaml.safe_load((configs / "multi-gpu" / name).read_text())
    accelerate = yaml.safe_load((configs / "multi-gpu" / "accelerate-fsdp2.yaml").read_text())
    LisaArgs.model_validate(cfg)
    assert config_problems(cfg) == []
    assert cfg["fsdp_version"] == 2 == accelerate["fsdp_config"]["fsdp_version"]
    assert accelerate["distributed_type"] == "FSDP"
    wrap = cfg["fsdp_config"]
    assert wrap["auto_wrap_policy"] == accelerate["fsdp_config"]["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert wrap["transformer_layer_cls_to_wrap"] == accelerate["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"]
    if name.startswith("llama2-70b"):  # the single-process config on 8 GPUs with the same global batch
        single = yaml.safe_load((configs / "llama2-70b-lisa.yml").read_text())
        batch = lambda c, gpus: c["micro_batch_size"] * c["gradient_accumulation_steps"] * gpus  # noqa: E731
        assert batch(cfg, accelerate["num_processes"]) == batch(single, 1)
        differ = {k for k in cfg.keys() | single.keys() if cfg.get(k) != single.get(k)}
        assert differ == {"gradient_accumulation_steps", "output_dir", *FSDP2_KEYS}


def test_axolotl_validates_an_fsdp2_lisa_config(tiny_root, tmp_path, monkeypatch):
    """Axolotl's own config loading accepts `lisa:` with FSDP2 and keeps the FSDP2 settings."""
    import yaml
    from axolotl.cli.config import load_cfg

    from tests.conftest import axolotl_config

    fsdp = yaml.safe_load((REPO / "lisa_plugin/example_configs/multi-gpu/llama3-8b-lisa-fsdp2.yml").read_text())
    cfg = axolotl_config("lisa", tiny_root, tmp_path / "out", **{k: fsdp[k] for k in FSDP2_KEYS})
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(cfg))
    before = dict(os.environ)
    try:
        loaded = load_cfg(str(path))
        leaked = {k: v for k, v in os.environ.items() if before.get(k) != v}
    finally:  # loading sets accelerate's FSDP variables: keep them out of the other tests
        os.environ.clear()
        os.environ.update(before)
    assert str(loaded.fsdp_version) == "2" and loaded.lisa is not None
    assert loaded.fsdp_config.auto_wrap_policy == "TRANSFORMER_BASED_WRAP"
    if "ACCELERATE_USE_FSDP" in leaked:  # what the callback then reads: FSDP2, which it runs
        from types import SimpleNamespace

        from lisa_plugin.integrations.callback import refuse_sharded_engines

        monkeypatch.setattr(os, "environ", {**before, **leaked})
        assert refuse_sharded_engines(SimpleNamespace(deepspeed=None, fsdp=True, fsdp_config={})) == "fsdp2"
