"""
Run this checkout's code in a child process: for the tests and for the
benchmarks in bench/ alike, so it needs nothing beyond the standard library.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: The source tree, put first on a child's PYTHONPATH so that it runs the
#: code under test, not an older installed copy.
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def twistd_command(*args: str) -> list[str]:
    """
    Run twistd with this Python, whatever the PATH holds.
    """
    return [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; "
            "sys.argv[0] = 'twistd'; run()", *args]


def server_environment() -> dict[str, str]:
    """
    This environment, with the source tree first on PYTHONPATH and no
    mailsrv settings inherited from the caller's shell.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SOURCE_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("MAILSRV_CONFIG", None)
    env.pop("MAILSRV_DATA", None)
    return env
