"""One run's server for a comparison: the user's, or one started on first use and stopped after the run."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path
from typing import Any, Callable

from eval_harness.engines.backend import BackendSettings, Endpoint, engine_identity
from eval_harness.engines.server import EngineServer, free_port, probe, server_command


class RunServer:
    """The endpoint serving one run's model. Nothing starts until :meth:`endpoint` is first called, so a run
    whose results are all cached costs no server start; :meth:`close` always stops what was started."""

    def __init__(self, settings: BackendSettings, run_name: str, model_dir: str, adapter_path: str | None,
                 tokenizer: str, work_dir: Path, say: Callable[[str], None]):
        self.settings, self.run_name, self.say = settings, run_name, say
        self.model_dir, self.adapter_path, self.tokenizer, self.work_dir = model_dir, adapter_path, tokenizer, work_dir
        self._endpoint: Endpoint | None = None
        self._server: EngineServer | None = None
        self._old_sigterm: Any = None
        self._identity: dict[str, Any] | None = None

    def identity(self) -> dict[str, Any]:
        """Backend, engine and version (and, for a user's server, its URL and model), without starting anything."""
        if self.settings.starts_server:
            if self._identity is None:  # read from the engine venv's metadata: once
                self._identity = engine_identity(self.settings)
            return self._identity
        endpoint = self.endpoint()
        return {**endpoint.identity(), "url": endpoint.base_url, "model": endpoint.model}

    def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            if self.settings.starts_server:
                self._endpoint = self._start()
            else:
                self._endpoint = probe(self.settings.server_url, self.settings.served_model(self.run_name, self.run_name))
        return self._endpoint

    def _start(self) -> Endpoint:
        model_dir = self.model_dir
        if self.adapter_path:
            from eval_harness.engines.merge import merged_copy

            self.say(f"engine: merging the adapter {self.adapter_path} into {self.model_dir} (cached)")
            model_dir = str(merged_copy(self.model_dir, self.adapter_path, self.tokenizer, self.work_dir / "merged"))
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", self.run_name) or "model"
        command = server_command(self.settings, model_dir, self.tokenizer, name, free_port())
        self._server = EngineServer(command, self.work_dir / f"server-{name}.log",
                                    timeout_s=self.settings.startup_timeout_s, say=self.say)
        self._trap_sigterm()
        return self._server.__enter__()

    def _trap_sigterm(self) -> None:
        """A SIGTERM to the harness unwinds like Ctrl-C, so the server (in its own session) is stopped too."""
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
            self._old_sigterm = signal.SIG_DFL

    def close(self) -> None:
        server, self._server, self._endpoint = self._server, None, None
        if server is not None:
            server.stop()
        if self._old_sigterm is not None and signal.getsignal(signal.SIGTERM) is _exit_on_sigterm:
            signal.signal(signal.SIGTERM, self._old_sigterm)
        self._old_sigterm = None

    def lazy_endpoint(self) -> "LazyEndpoint":
        """The endpoint for code that may find nothing to generate (every answer cached): the server starts
        on the first attribute read, not before."""
        return LazyEndpoint(self)


class LazyEndpoint:
    """Stands for :meth:`RunServer.endpoint` and starts the server on first use. ``identity()`` does not start
    a vLLM server from ``--engine-python`` (its engine and version are read from the venv, as its /version
    would report them); a server from ``--engine-command`` or the user's is asked (started or probed)."""

    def __init__(self, server: RunServer):
        self._run_server = server

    def identity(self) -> dict[str, Any]:
        server = self._run_server
        if server._endpoint is None and server.settings.starts_server and server.settings.engine_python:
            return server.identity()
        return server.endpoint().identity()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run_server.endpoint(), name)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)
