"""lisa_formats: atomic writes keep the user's umask and never leave half a file."""

from __future__ import annotations

import json
import os
import stat

import pytest

from lisa_formats import atomic
from lisa_formats.history import FORMAT, LisaHistory, read_history
from lisa_formats.norms import NormsProfile, profile_weights
from lisa_formats.suggest import did_you_mean, unknown


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask,expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_new_files_get_the_mode_open_would_give(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        path = atomic.write_json_atomic(tmp_path / "sub" / "results.json", {"a": 1})
    finally:
        os.umask(old)
    assert _mode(path) == expected
    assert json.loads(path.read_text()) == {"a": 1}


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "shared.json"
    path.write_text("{}")
    path.chmod(0o640)
    atomic.write_text_atomic(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic.write_text_atomic(path, "old")
    synced = []
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(fd))

    def no_room(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", no_room)
    with pytest.raises(OSError, match="No space"):
        atomic.write_text_atomic(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    assert synced, "the data is fsynced before the rename"


def test_jsonl_written_whole_reads_back(tmp_path):
    from lisa_formats.jsonl import read_jsonl

    records = [{"q": 1, "text": "é"}, {"q": 2}]
    atomic.write_jsonl_atomic(tmp_path / "a.jsonl", records)
    assert read_jsonl(tmp_path / "a.jsonl") == records


def test_history_round_trip_and_format_check(tmp_path):
    history = LisaHistory(settings={"n_layers": 1}, num_layers=2, layers_path="model.layers",
                          layer_params=[3, 3], always_trainable_params=5,
                          strategy_resolved={"weights": [1.0, 2.0]})
    history.write(tmp_path)
    back = read_history(tmp_path)
    assert back.strategy_resolved == {"weights": [1.0, 2.0]} and back.num_layers == 2
    with pytest.raises(ValueError, match=FORMAT):
        LisaHistory.from_json({"format": "something/9"})


@pytest.mark.parametrize("data", [[], {"format": "lisa_norms/1"}, {"format": "lisa_norms/1", "base": "b", "runs": [1]},
                                  {"format": "lisa_norms/1", "base": "b", "runs": [{"name": "x", "layers": [{}]}]}])
def test_malformed_profiles_are_named_errors(tmp_path, data):
    path = tmp_path / "norms.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"lisa\.profile: .*norms\.json"):
        profile_weights(path, None, 2)


def test_profile_weights_in_layer_order(tmp_path):
    rows = [{"layer": layer, "kind": kind, "update_norm": norm, "relative_norm": 0.0, "mean_update_norm": 0.0,
             "base_norm": 1.0, "num_tensors": 1}
            for layer, kind, norm in [("embedding", "embedding", 9.0), ("1", "layer", 2.0), ("0", "layer", 1.0),
                                      ("10", "layer", 3.0), ("head", "head", 9.0)]]
    # layers 2..9 present too, so "10" must sort after "9" numerically
    rows += [{**rows[1], "layer": str(i), "update_norm": float(i)} for i in range(2, 10)]
    profile = {"format": "lisa_norms/1", "base": "b", "runs": [{"name": "r", "path": "p", "source": "weights", "layers": rows}]}
    (tmp_path / "norms.json").write_text(json.dumps(profile))
    weights = profile_weights(tmp_path, None, 11)
    assert weights[:2] == [1.0, 2.0] and weights[-1] == 3.0
    assert NormsProfile.from_json(profile).runs[0].name == "r"


def test_suggestions():
    assert did_you_mean("interval_step", ["interval_steps", "n_layers"]) == " Did you mean 'interval_steps'?"
    assert did_you_mean("zzz", ["interval_steps"]) == ""
    assert unknown("benchmark", "gsm9k", ["gsm8k", "pubmedqa"]) == (
        "Unknown benchmark 'gsm9k'. Did you mean 'gsm8k'? Available: gsm8k, pubmedqa")


def test_resources_round_trip_absent_and_malformed(tmp_path):
    from lisa_formats.resources import RESOURCES_FILE, SCHEMA, read_resources, write_resources

    assert read_resources(tmp_path) is None
    path = write_resources(tmp_path, peak_rss_bytes=2_000_000, peak_gpu_bytes=None, wall_s=1.5,
                           command=["axolotl", "train", "c.yml"], exit_code=0)
    assert path == tmp_path / RESOURCES_FILE and json.loads(path.read_text())["schema"] == SCHEMA
    back = read_resources(tmp_path)
    assert (back.peak_rss_bytes, back.peak_gpu_bytes, back.wall_s, back.command, back.exit_code, back.schema) == (
        2_000_000, None, 1.5, ["axolotl", "train", "c.yml"], 0, SCHEMA)
    for text in ["{not json", json.dumps({"schema": "other/1"}),
                 json.dumps({"schema": SCHEMA, "peak_rss_bytes": "big", "peak_gpu_bytes": None, "wall_s": 1,
                             "command": [], "exit_code": 0})]:
        path.write_text(text)
        with pytest.raises(ValueError, match=RESOURCES_FILE):
            read_resources(tmp_path)
