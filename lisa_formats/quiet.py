"""Third-party log lines that alarm or mislead and ask nothing of the user: drop or reword them.

Each rule names one logger and one message, so everything else those libraries say still
shows. Our entry points call :func:`quiet_third_party` first; the processes our tools start
(``axolotl train`` and what it launches) get the same rules through :func:`quiet_env`, whose
``PYTHONPATH`` entry holds a ``sitecustomize`` that calls it at interpreter start-up.

* ``torchao``: "Failed to load .../torchao/_C*.so" (twice) when torch sees no CUDA device: those
  libraries are CUDA kernels, which a CPU-only machine cannot load and does not need.
* ``torch.utils._pytree``: "<enum ...> is an Enum subclass ... Calling register_constant() on Enum
  subclasses is deprecated" (twice): addressed to torchao, which makes the call at import.
* ``bitsandbytes.backends.cpu.ops``: a failed download of an optional CPU 4-bit kernel from the
  Hugging Face Hub ended "Set trust_remote_code=True to allow loading kernels from untrusted
  sources" and "make sure you `pip install kernels`". Kept, reworded: bitsandbytes falls back to
  its built-in kernel, and nobody should trust unverified code to silence a message.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Callable, Mapping

SITE_DIR = Path(__file__).resolve().parent / "_site"

_TORCHAO_SO = re.compile(r"^Failed to load \S*torchao[/\\]_C[^/\\\s]*\.so: ")
_PYTREE_ENUM = re.compile(
    r"is an Enum subclass and is now natively supported by torch\.compile as an opaque value type\. "
    r"Calling register_constant\(\) on Enum subclasses is deprecated"
)
_BNB_CPU_KERNEL = re.compile(r"^Failed to load CPU gemm_4bit_forward from kernels-community: (?P<reason>.*?)"
                             r"(?: Please make sure you already `pip install kernels`.*)?$", re.S)
_UNSAFE_ADVICE = re.compile(r"\s*Set trust_remote_code=True[^.]*\.")


def _no_cuda() -> bool:
    torch = sys.modules.get("torch")  # torchao imports torch before it logs
    try:
        return torch is not None and not torch.cuda.is_available()
    except Exception:
        return False


class _DropMessage(logging.Filter):
    def __init__(self, pattern: re.Pattern, when: Callable[[], bool] = lambda: True) -> None:
        super().__init__()
        self.pattern, self.when = pattern, when

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        return not (self.pattern.search(message) and self.when())


class _RewordBnbKernel(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            match = _BNB_CPU_KERNEL.match(record.getMessage())
        except Exception:
            return True
        if match:
            reason = _UNSAFE_ADVICE.sub("", match.group("reason")).strip().rstrip(".") or "not available"
            record.msg = ("bitsandbytes: the optional CPU 4-bit kernel from the Hugging Face Hub was not loaded "
                          "(%s); bitsandbytes uses its built-in CPU kernel instead.")
            record.args = (reason,)
        return True


_RULES: tuple[tuple[str, Callable[[], logging.Filter]], ...] = (
    ("torchao", lambda: _DropMessage(_TORCHAO_SO, _no_cuda)),
    ("torch.utils._pytree", lambda: _DropMessage(_PYTREE_ENUM)),
    ("bitsandbytes.backends.cpu.ops", _RewordBnbKernel),
)


def quiet_third_party() -> None:
    """Install the rules above on their loggers (idempotent; safe before the libraries are imported)."""
    for name, make in _RULES:
        logger = logging.getLogger(name)
        if not any(getattr(f, "_lisa_quiet", False) for f in logger.filters):
            rule = make()
            rule._lisa_quiet = True  # type: ignore[attr-defined]
            logger.addFilter(rule)


def quiet_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the same rules for Python child processes."""
    env = dict(os.environ if env is None else env)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(SITE_DIR)]
    env["PYTHONPATH"] = os.pathsep.join([str(SITE_DIR), *paths])
    return env
