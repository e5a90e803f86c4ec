"""Real `axolotl train` runs with the plugin, in subprocesses, on tiny local models."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lisa_plugin.core.history import read_history
from lisa_plugin.strategies import select_active_layers
from tests.conftest import axolotl_config, run_axolotl

pytestmark = pytest.mark.axolotl  # every test here trains with `axolotl train`

K, GAMMA, STEPS, LAYERS = 2, 2, 24, 6


def seed_leaving_a_layer_out() -> int:
    """A seed whose first STEPS/K uniform draws never pick some layer (found, not hard-coded)."""
    for seed in range(10_000):
        seen = set()
        for i in range(STEPS // K):
            seen.update(select_active_layers(strategy="uniform", num_layers=LAYERS, n_layers=GAMMA, seed=seed, switch_index=i))
        if len(seen) < LAYERS:
            return seed
    raise AssertionError("no such seed")


SEED = seed_leaving_a_layer_out()


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(path) / "model.safetensors"))


def lisa_run(tiny_root, tmp_path_factory, name, **lisa):
    out = tmp_path_factory.mktemp(name)
    cfg = axolotl_config(
        "lisa", tiny_root, out / "out", max_steps=STEPS, logging_steps=1, save_strategy="steps", save_steps=5, save_total_limit=20,
        lisa={"n_layers": GAMMA, "interval_steps": K, "seed": SEED, **lisa},
    )
    run_axolotl(cfg, out)
    return out / "out"


@pytest.fixture(scope="module")
def release_run(tiny_root, tmp_path_factory):
    return lisa_run(tiny_root, tmp_path_factory, "release", optimizer_state="release")


@pytest.fixture(scope="module")
def keep_run(tiny_root, tmp_path_factory):
    return lisa_run(tiny_root, tmp_path_factory, "keep", optimizer_state="keep")


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[2]) if name.startswith("model.layers.") else None


def test_sampled_layers_change_and_others_stay_bitwise(tiny_root, release_run):
    history = read_history(release_run)
    assert [s["step"] for s in history.switches] == list(range(0, STEPS, K))
    sampled = {i for s in history.switches for i in s["active"]}
    assert len(sampled) < LAYERS  # the seed was chosen so that one layer is never drawn
    base, tuned = weights(tiny_root / "model"), weights(release_run)
    assert base.keys() == tuned.keys()
    for name, before in base.items():
        layer = layer_of(name)
        changed = not torch.equal(before, tuned[name])
        if layer is None:
            assert changed, f"{name} (E/H, trainable) did not change"
        elif layer in sampled:
            assert changed or name.endswith("layernorm.weight"), f"{name} of sampled layer {layer} did not change"
        else:
            assert not changed, f"{name} of never-sampled layer {layer} changed"


def test_release_holds_exactly_the_bound_and_keep_grows(tiny_root, release_run, keep_run):
    from transformers import AutoModelForCausalLM

    from lisa_plugin.core.optimizer_state import adamw_state_bound

    model = AutoModelForCausalLM.from_pretrained(tiny_root / "model")
    eh = [p for n, p in model.named_parameters() if not n.startswith("model.layers.")]
    released = read_history(release_run).switches
    assert len(released) >= 10
    for previous, switch in zip(released, released[1:]):
        bound = adamw_state_bound(eh + [p for i in previous["active"] for p in model.model.layers[i].parameters()])
        assert switch["optimizer_state_bytes_before"] == bound
    kept = read_history(keep_run).switches
    assert [s["active"] for s in kept] == [s["active"] for s in released]  # same seed, same sequence
    kept_bytes = [s["optimizer_state_bytes_before"] for s in kept]
    assert kept_bytes == sorted(kept_bytes) and kept_bytes[-1] > released[-1]["optimizer_state_bytes_before"]


def test_resume_mid_interval_continues_the_sequence(tiny_root, tmp_path_factory, release_run):
    checkpoint = release_run / "checkpoint-5"  # step 5 is inside interval [4, 6)
    out = tmp_path_factory.mktemp("resumed")
    cfg = axolotl_config(
        "lisa", tiny_root, out / "out", max_steps=STEPS, logging_steps=1, resume_from_checkpoint=str(checkpoint),
        lisa={"n_layers": GAMMA, "interval_steps": K, "seed": SEED},
    )
    run_axolotl(cfg, out)
    original, resumed = read_history(release_run), read_history(out / "out")
    assert resumed.switches == original.switches
    # After the resume, only layers active from interval 2 on may have moved.
    later = {i for s in resumed.switches if s["step"] >= 4 for i in s["active"]}
    at_checkpoint, final = weights(checkpoint), weights(out / "out")
    for name, tensor in at_checkpoint.items():
        if layer_of(name) is not None and layer_of(name) not in later:
            assert torch.equal(tensor, final[name]), f"{name} trained after resume outside the active set"


def test_gpt2_with_frozen_e_h_and_a_third_party_strategy(tiny_gpt2_root, tmp_path):
    cfg = axolotl_config(
        "lisa", tiny_gpt2_root, tmp_path / "out", max_steps=6, logging_steps=1,
        lisa={"n_layers": 1, "interval_steps": 2, "strategy": "countdown", "train_embeddings": False, "train_head": False},
    )
    run_axolotl(cfg, tmp_path, env={"LISA_PLUGINS": "third_party_strategy", "PYTHONPATH": str(Path(__file__).parent)})
    history = read_history(tmp_path / "out")
    assert history.layers_path == "transformer.h"
    assert [s["active"] for s in history.switches] == [[3], [2], [1]]
    base, tuned = weights(tiny_gpt2_root / "model"), weights(tmp_path / "out")
    for name, before in base.items():
        changed = not torch.equal(before, tuned[name])
        trained = any(name.startswith(f"transformer.h.{i}.") for i in (1, 2, 3))
        if trained and name.endswith("weight") and ".ln_" not in name:
            assert changed, name
        elif not trained:
            assert not changed, f"{name} is frozen (E/H off, layer never sampled) but changed"


def test_bad_block_stops_axolotl_with_the_key_named(tiny_root, tmp_path):
    cfg = axolotl_config("lisa", tiny_root, tmp_path / "out", lisa={"n_layers": 0})
    proc = run_axolotl(cfg, tmp_path, check=False)
    assert proc.returncode != 0
    assert "n_layers" in proc.stdout + proc.stderr and "greater than or equal to 1" in proc.stdout + proc.stderr
