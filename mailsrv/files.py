"""
Durable file writes: replace a file so that a crash leaves either the old
contents or the new, never a mix, and the new name survives a power cut.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: Threads that fsync directories beside a file's fsync.
_DIRECTORY_SYNCS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mailsrv-dirsync")


def fsync_directory(path: Path) -> None:
    """
    Make the names in a directory (created, renamed, removed) durable.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_with_directories(fd: int, directories: Iterable[Path]) -> None:
    """
    fsync a file and directories at the same time.  Changes made before the
    call then share one journal commit, where syncing one after the other
    would wait for a commit each.
    """
    syncing = [_DIRECTORY_SYNCS.submit(fsync_directory, d) for d in directories]
    try:
        os.fsync(fd)
    finally:
        for future in syncing:
            future.result()


def write_atomically(path: Path, data: bytes, mode: int = 0o600,
                     owner: tuple[int, int] | None = None, *,
                     sync_directory: bool = True) -> None:
    """
    Write C{data} beside C{path}, fsync it, rename it over C{path} and fsync
    the directory.  On failure nothing is left behind.

    @param owner: C{(uid, gid)} to give the file (only root may).
    @param sync_directory: C{False} for a caller that writes several files
        in one directory and syncs it once for all of them.
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
    if sync_directory:
        fsync_directory(path.parent)

