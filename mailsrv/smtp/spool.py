"""
A message being received: kept in memory while small, in a temporary file
once large, so that fifty 25 MB messages do not need 1.25 GB of memory.
"""

from __future__ import annotations

import io
import os
import tempfile

#: Messages up to this size stay in memory.
IN_MEMORY = 1024 * 1024


class _PrefixedReader:
    """
    Read C{prefix} and then a file, as one stream (a header added in front
    of a spooled message without copying it).
    """

    def __init__(self, prefix: bytes, path: str):
        self._prefix = prefix
        self._path = path
        self._file = None

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            chunk, self._prefix = self._prefix, b""
            return chunk
        if self._file is None:
            self._file = open(self._path, "rb")
        chunk = self._file.read(size)
        if not chunk:
            self._file.close()
        return chunk


class MessageSpool:
    """
    The bytes of one message, written line by line.
    """

    def __init__(self):
        self._memory: io.BytesIO | None = io.BytesIO()
        self._file = None
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._memory is not None:
            self._memory.write(data)
            if self.size > IN_MEMORY:
                self._file = tempfile.NamedTemporaryFile(prefix="mailsrv-spool-", delete=False)
                self._file.write(self._memory.getvalue())
                self._memory = None
        else:
            self._file.write(data)

    def open_with_prefix(self, prefix: bytes):
        """
        The message with C{prefix} in front: bytes when small, a reader when
        spooled (each call gets its own, so deliveries can run at once).
        """
        if self._memory is not None:
            return prefix + self._memory.getvalue()
        self._file.flush()
        return _PrefixedReader(prefix, self._file.name)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            try:
                os.unlink(self._file.name)
            except FileNotFoundError:
                pass
            self._file = None
        self._memory = None

    def close_after(self, result):
        self.close()
        return result
