"""``python -I measured_child.py RESULT COMMAND...``: run COMMAND, write its peak RSS to RESULT, exit as it did.

Run by path from :func:`lisa_plugin.tools.axolotl_runner.run_measured`, standard library only.
It exists because a process started directly by a large one (the demo, having built and
pre-trained a model; a test runner) inherits that parent's memory high-water mark: Linux
records the old address space's peak in ``ru_maxrss`` at ``exec``, and ``vfork`` hands over the
parent's. This interpreter is small, so COMMAND, started from it, starts from a small mark, and
``os.wait4`` here sees COMMAND's peak and that of every descendant it waited for.
"""

import os
import signal
import subprocess
import sys


def _keyboard_reaches(pid: int) -> bool:
    # a Ctrl-C typed at the terminal already reached COMMAND: forwarding it would interrupt it twice
    try:
        fd = os.open("/dev/tty", os.O_RDONLY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp() == os.getpgid(pid)
    except OSError:
        return False
    finally:
        os.close(fd)


def main(result: str, command: list[str]) -> int:
    # the handlers come first: a signal that arrives while COMMAND starts is held, then passed on
    child: list = []
    early: list[int] = []

    def forward(signum, _frame) -> None:
        if not child:
            early.append(signum)
            return
        if signum == signal.SIGINT and _keyboard_reaches(child[0].pid):
            return
        try:
            os.kill(child[0].pid, signum)
        except ProcessLookupError:
            pass

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), forward)
    proc = subprocess.Popen(command)
    child.append(proc)
    for signum in early:
        forward(signum, None)
    if not hasattr(os, "wait4"):  # Windows: no resource usage of children
        code, peak = proc.wait(), ""
    else:
        _, status, usage = os.wait4(proc.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        # ru_maxrss: KiB on Linux and the BSDs, bytes on macOS
        peak = str(usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024)
    with open(result, "w", encoding="utf-8") as fh:
        fh.write(peak)
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell reports it


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
