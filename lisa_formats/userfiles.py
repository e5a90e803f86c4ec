"""Reading a file someone else put in a folder: a regular file of bounded size, or an error naming it.

A run folder is user input. A FIFO named ``README.md`` would block a plain ``read_text`` forever,
``debug.log`` linked to ``/dev/zero`` would be read until memory runs out, and a 3 GB log is not
worth parsing for a config block. :func:`read_user_text` opens without blocking, checks that it
got a regular file and reads at most ``limit`` bytes of it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MIB = 2**20
DEFAULT_LIMIT = 64 * MIB


class UserFileError(ValueError):
    """A user's file that is not read: not a regular file, or larger than the limit."""


def read_user_bytes(path: Path | str, limit: int = DEFAULT_LIMIT, truncate: bool = False) -> bytes:
    """The bytes of ``path`` when it is a regular file of at most ``limit`` bytes.

    ``truncate``: a larger file gives its first ``limit`` bytes instead of an error (a long log
    whose head is what is wanted).

    :raises UserFileError: a FIFO, device, socket or directory, or a larger file (the message names it).
    :raises OSError: the file cannot be opened (missing, no permission).
    """
    path = Path(path)
    # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserFileError(f"{path}: not a regular file ({_kind(info.st_mode)}); not read")
        if info.st_size > limit and not truncate:
            raise UserFileError(f"{path}: {info.st_size} bytes, more than the {limit // MIB} MiB read from such a "
                                "file; not read")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(MIB, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit and truncate:
            return b"".join(chunks)[:limit]
        if size > limit:  # grew while being read
            raise UserFileError(f"{path}: more than the {limit // MIB} MiB read from such a file; not read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_user_text(path: Path | str, limit: int = DEFAULT_LIMIT, truncate: bool = False) -> str:
    """:func:`read_user_bytes` decoded as UTF-8 (undecodable bytes replaced)."""
    return read_user_bytes(path, limit, truncate).decode("utf-8", errors="replace")


def is_regular_file(path: Path | str) -> bool:
    """Whether ``path`` is (or links to) a regular file; never opens it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"
