"""
What the benchmarks share: the machine's and processes' CPU time, free
ports, logs, which code ran, and the ext4 placement trick for temp dirs.

The benchmarks import it as C{bench.common} once they have put the source
tree first on C{sys.path} (see each script's top).
"""

import fcntl
import os
import resource
import signal
import socket
import struct
import subprocess
from pathlib import Path

from tests.sourcetree import SOURCE_ROOT

#: Seconds a process has to stop after its signal, before SIGKILL.
STOP_TIMEOUT = 15.0

# Linux's inode flags ioctls (linux/fs.h) and the "top of a hierarchy" flag.
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000


def spread_subdirectories(directory: Path) -> None:
    """
    Mark C{directory} as the top of a hierarchy (C{chattr +T}), so that ext4
    puts each subdirectory (a server's, a case's) in a block group of its
    own.  Other file systems refuse or ignore the flag, which changes
    nothing else.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = struct.unpack("l", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("l", 0)))[0]
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("l", flags | FS_TOPDIR_FL))
    except OSError:
        pass
    finally:
        os.close(fd)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text("utf-8", "replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def own_cpu() -> float:
    """
    CPU seconds this process (the benchmark's client) has used so far.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_cpu() -> tuple[float, float]:
    """
    CPU seconds the whole machine has spent working so far (all cores,
    kernel included), and those stolen from it by the hypervisor.
    """
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (
            int(x) for x in f.readline().split()[1:9])
    ticks = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / ticks, steal / ticks


def run_command(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def source_state() -> str:
    """
    Which mailsrv code ran: the commit, and whether it has local edits.
    """
    head = run_command(["git", "-C", str(SOURCE_ROOT), "rev-parse", "--short", "HEAD"])
    if not head:
        return "not a git checkout"
    dirty = run_command(["git", "-C", str(SOURCE_ROOT), "status", "--porcelain", "--",
                         "mailsrv"])
    return head + (" + uncommitted edits to mailsrv/" if dirty else "")


def filesystem_of(path: Path) -> str:
    out = run_command(["df", "-T", str(path)]).splitlines()
    if not out:
        return "unknown"
    fields = out[-1].split()
    return f"{fields[1]} ({fields[0]} on {fields[-1]})"


def stop_process(process: subprocess.Popen | None, signum: int = signal.SIGTERM) -> None:
    """
    C{signum} to its process group (which start_new_session made), wait,
    then SIGKILL whatever is left of the group.
    """
    if process is None:
        return
    if process.poll() is None:
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    kill_group(process.pid)


def kill_group(pgid: int) -> None:
    """
    SIGKILL whatever is left of a process group that we started.
    """
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
