"""
Durable file writes: replace a file so that a crash leaves either the old
contents or the new, never a mix, and the new name survives a power cut.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def fsync_directory(path: Path) -> None:
    """
    Make the names in a directory (created, renamed, removed) durable.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int = 0o600,
                     owner: tuple[int, int] | None = None) -> None:
    """
    Write C{data} beside C{path}, fsync it, rename it over C{path} and fsync
    the directory.  On failure nothing is left behind.

    @param owner: C{(uid, gid)} to give the file (only root may).
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
