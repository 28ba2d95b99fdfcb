"""
End-to-end fixture: the real server, C{twistd -n mailsrv}, in a subprocess
with a generated config, free ports, a temporary data folder and a test CA.

    server = ServerProcess.start(self)          # in a trial test
    smtplib.SMTP("127.0.0.1", server.ports["smtp"])
    ssl_context = server.client_tls()           # trusts the test CA

Listeners bind port 0; the fixture reads the real ports from the server's
log, so parallel test runs never collide.  The server is stopped (SIGTERM,
then SIGKILL) when the test ends.
"""

from __future__ import annotations

import re
import signal
import ssl
import subprocess
import time
from pathlib import Path

import trustme

from mailsrv.config import ROLES
from tests.sourcetree import server_environment, twistd_command

_LISTENING = re.compile(r"\[mailsrv\.service#info\] (\w+) listening on [^ ]*:(\d+) ")


def write_test_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """
    A test CA and a server certificate for localhost, 127.0.0.1 and ::1,
    with the subject CN that offlineimap3 insists on besides the
    subjectAltNames.

    @return: the CA, certificate chain and key paths.
    """
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1", "::1", common_name="localhost")
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_path))
    issued.private_key_pem.write_to_path(str(key_path))
    cert_path.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    return ca_path, cert_path, key_path


def write_test_config(directory: Path, extra_config: str = "", roles=ROLES,
                      tls_options: str = "") -> tuple[Path, Path]:
    """
    Write a config for a test server into C{directory}: the given roles on
    port 0 of 127.0.0.1 (the others off), data in C{directory/data}, a
    certificate from a fresh test CA, and C{tls_options} in its [tls].

    @return: the config path and the CA path.
    """
    ca_path, cert_path, key_path = write_test_certificate(directory / "tls")
    listeners = "\n".join(
        f'{role} = ["tcp:0:interface=127.0.0.1"]' if role in roles else f"{role} = []"
        for role in ROLES)
    config_path = directory / "mailsrv.toml"
    config_path.write_text(
        f'[server]\nhostname = "localhost"\ndata_dir = "data"\n\n'
        f"[listeners]\n{listeners}\n\n"
        f'[tls]\ncertificate = "{cert_path}"\nkey = "{key_path}"\n{tls_options}\n\n'
        f"{extra_config}")
    return config_path, ca_path


def wait_for(condition, timeout: float = 10.0) -> None:
    """
    Poll C{condition} until it is true; fail after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {condition}")
        time.sleep(0.05)


class ServerProcess:
    """
    A running C{twistd -n mailsrv}.

    @ivar ports: role name -> the TCP port it listens on (127.0.0.1).
    @ivar ca_path: the CA that signed the server's certificate.
    """

    def __init__(self, directory: Path, args: list[str], ca_path: Path, data_dir: Path,
                 twistd_args: tuple[str, ...] = ()):
        self.directory = directory
        self.args = args
        self.twistd_args = twistd_args
        self.data_dir = data_dir
        self.log_path = directory / "twistd.log"
        self.stderr_path = directory / "stderr.txt"
        self.ca_path = ca_path
        self.ports: dict[str, int] = {}
        self.process: subprocess.Popen | None = None

    @classmethod
    def start(cls, testcase, extra_config: str = "", roles=ROLES,
              tls_options: str = "") -> ServerProcess:
        """
        Start a server for C{testcase} and stop it when the test ends.

        @param extra_config: TOML appended to the generated config (whole
            sections that the generated one does not have).
        """
        directory = Path(testcase.mktemp()).absolute()
        config_path, ca_path = write_test_config(directory, extra_config, roles, tls_options)
        server = cls(directory, ["--config", str(config_path)], ca_path, directory / "data")
        testcase.addCleanup(server.stop)
        server.run(expect_roles=roles)
        return server

    def run(self, expect_roles=ROLES, timeout: float = 30.0) -> None:
        """
        Start twistd and wait until every expected role is listening.
        """
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                twistd_command("-n", "--pidfile=", f"--logfile={self.log_path}",
                               *self.twistd_args, "mailsrv", *self.args),
                cwd=self.directory, env=server_environment(),
                stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ports = {role: int(port) for role, port in _LISTENING.findall(self.log())}
            if set(expect_roles) <= set(self.ports):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"mailsrv did not start:\n{self.log()}\n{self.stderr()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr(self) -> str:
        return self.stderr_path.read_text("utf-8", "replace")

    def client_tls(self) -> ssl.SSLContext:
        """
        A client context that trusts the server's CA and checks its name.
        """
        return ssl.create_default_context(cafile=str(self.ca_path))

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int | None:
        """
        SIGTERM, wait, SIGKILL if need be; return the exit status.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
