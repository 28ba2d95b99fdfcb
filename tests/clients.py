"""
Running the third-party clients of the interop tests (installed from
Debian by .ci/run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def require(client: str) -> None:
    """
    Fail, not skip, when a client is missing: .ci/run installs it, and a
    check skipped in CI proves nothing.
    """
    if shutil.which(client) is None:
        raise AssertionError(f"{client} is not installed (.ci/run installs it)")


def run(command: list[str], stdin: bytes = b"", home: Path | None = None
        ) -> subprocess.CompletedProcess:
    """
    Run a client, with HOME in the test's folder if given.  The environment
    loses PYTHONPATH and the like: trial -j sets PYTHONPATH to its own
    sys.path, which breaks the system Python that offlineimap runs on.
    """
    require(command[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run(command, input=stdin, capture_output=True, timeout=60, env=env)


def output(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr).decode("utf-8", "replace")
