"""Third-party noise (lisa_formats.quiet): the named lines go, everything else from those loggers stays."""

from __future__ import annotations

import subprocess
import sys

from lisa_formats.quiet import quiet_env

BNB_LINE = ("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
            "`pip install kernels` and the kernels >= 0.11.1")
BNB_REASON = ("Kernel repository 'kernels-community/quantization-bitsandbytes' could not verify publisher trust "
              "status. Set trust_remote_code=True to allow loading kernels from untrusted sources.")
# What a training child does at start: configure logging, import torchao (which logs through torch's
# and its own loggers), then bitsandbytes' CPU backend reports its optional kernel (the exact call of
# bitsandbytes/backends/cpu/ops.py, which runs only on CPUs with AVX512-BF16).
CHILD = f"""
import logging, torch
logging.basicConfig(format="%(name)s: %(message)s")
import torchao, torchao.prototype.mx_formats  # as Axolotl imports them
logging.getLogger("torchao").warning("another torchao warning")
logging.getLogger("torch.utils._pytree").warning("another pytree warning")
logging.getLogger("bitsandbytes.backends.cpu.ops").warning({BNB_LINE!r}, {BNB_REASON!r})
print("cuda" if torch.cuda.is_available() else "cpu")
"""


def _run(env) -> tuple[str, str]:
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip(), proc.stderr


def test_child_processes_lose_only_the_named_lines():
    device, noisy = _run(None)
    _, quiet = _run(quiet_env())
    pytree = "is an Enum subclass and is now natively supported by torch.compile"
    assert noisy.count(pytree) == 2 and quiet.count(pytree) == 0, quiet  # pinned torch + torchao print it twice
    if device == "cpu":  # CUDA kernels that cannot load without CUDA
        assert noisy.count("torchao: Failed to load") == 2 and "Failed to load" not in quiet.replace(
            "bitsandbytes", ""), quiet
    else:  # with a GPU a failed kernel load means something: it stays
        assert quiet.count("torchao: Failed to load") == noisy.count("torchao: Failed to load")
    assert "trust_remote_code" in noisy and "trust_remote_code" not in quiet and "pip install kernels" not in quiet
    assert ("bitsandbytes.backends.cpu.ops: bitsandbytes: the optional CPU 4-bit kernel from the Hugging Face Hub "
            "was not loaded (Kernel repository 'kernels-community/quantization-bitsandbytes' could not verify "
            "publisher trust status); bitsandbytes uses its built-in CPU kernel instead.") in quiet
    for kept in ("torchao: another torchao warning", "another pytree warning"):
        assert kept in quiet


def test_quiet_env_keeps_the_callers_pythonpath(tmp_path):
    env = quiet_env({"PYTHONPATH": str(tmp_path), "X": "1"})
    assert env["X"] == "1" and env["PYTHONPATH"].split(":")[1:] == [str(tmp_path)]
    assert quiet_env(env)["PYTHONPATH"] == env["PYTHONPATH"]  # idempotent
