"""
End-to-end tests of C{twistd mailsrv}: the real server in a subprocess.
"""

import os
import signal
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

from twisted.python.usage import UsageError
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SkipTest, TestCase

from mailsrv.config import IMPLICIT_TLS_ROLES, ROLES
from mailsrv.tap import _owner
from tests.server import ServerProcess, wait_for, write_test_certificate, write_test_config
from tests.sourcetree import server_environment, twistd_command
from tests.test_service import GREETINGS, expected_greeting, read_greeting

DEFAULT_PORTS = {"smtp": 2525, "submission": 2587, "submissions": 2465, "imap": 2143,
                 "imaps": 2993, "pop3": 2110, "pop3s": 2995}

def run_twistd(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """
    Run a twistd that is expected to exit by itself.
    """
    return subprocess.run(twistd_command("-n", "--pidfile=", "mailsrv", *args), cwd=cwd,
                          env=server_environment(), capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def check_greetings(testcase, ports, cafile):
    context = ssl.create_default_context(cafile=str(cafile))
    for role, port in ports.items():
        greeting = read_greeting(port, context if role in IMPLICIT_TLS_ROLES else None)
        testcase.assertEqual(greeting, expected_greeting(role), role)


class EmbeddedDefaultTests(TestCase):
    def test_runsWithoutConfig(self):
        """
        In an empty folder, C{twistd -n mailsrv} listens on the documented
        ports of 127.0.0.1, keeps its state in ./mailsrv-data with a fresh
        certificate, tells how to add a user, and stops cleanly on SIGTERM.
        """
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        data = directory / "mailsrv-data"
        server = ServerProcess(directory, [], data / "tls" / "cert.pem", data)
        self.addCleanup(server.stop)
        server.run()
        self.assertEqual(server.ports, DEFAULT_PORTS)
        check_greetings(self, server.ports, server.ca_path)
        self.assertIn(f"No users yet. Add one with: mailsrv --data {data} user add "
                      "you@localhost", server.log())
        # twistd re-raises the signal after a clean shutdown, so the exit
        # status says "terminated by SIGTERM", as service managers expect.
        self.assertEqual(server.stop(), -signal.SIGTERM)
        self.assertIn("Server Shut Down.", server.log())
        self.assertNotIn("Traceback", server.log() + server.stderr())
        self.assertEqual(sorted(p.name for p in directory.iterdir()),
                         ["mailsrv-data", "stderr.txt", "twistd.log"])


class ConfiguredServerTests(TestCase):
    def test_allListenersWithTheConfiguredCertificate(self):
        server = ServerProcess.start(self)
        self.assertEqual(set(server.ports), set(ROLES))
        check_greetings(self, server.ports, server.ca_path)

    def test_opensslClient(self):
        """
        OpenSSL's own client verifies the chain and the name on an implicit
        TLS port; TLS 1.1 is refused (TLS 1.2 is the floor, RFC 8314 4.1).
        """
        server = ServerProcess.start(self, roles=("pop3s",))
        connect = ["openssl", "s_client", "-connect", f"127.0.0.1:{server.ports['pop3s']}",
                   "-CAfile", str(server.ca_path), "-verify_hostname", "localhost",
                   "-verify_return_error"]
        result = subprocess.run([*connect, "-quiet"], input=b"QUIT\r\n", capture_output=True,
                                timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, GREETINGS["pop3"] + b"+OK Bye\r\n")
        result = subprocess.run([*connect, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
                                input=b"", capture_output=True, timeout=30)
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn(GREETINGS["pop3"], result.stdout)

    def renew_certificate(self, server) -> ssl.SSLContext:
        """
        Put a certificate from another CA in place of the server's files;
        return a client context that trusts only the new one.
        """
        new_ca, _, _ = write_test_certificate(server.directory / "tls-new")
        for name in ("cert.pem", "key.pem"):
            os.replace(server.directory / "tls-new" / name, server.directory / "tls" / name)
        return ssl.create_default_context(cafile=str(new_ca))

    def test_sighupReloadsTheCertificate(self):
        """
        New certificate files are served after SIGHUP, without a restart
        (file polling is off here: check_interval = 0).
        """
        server = ServerProcess.start(self, roles=("imaps",), tls_options="check_interval = 0")
        context = self.renew_certificate(server)
        with self.assertRaises(ssl.SSLCertVerificationError):
            read_greeting(server.ports["imaps"], context)
        server.signal(signal.SIGHUP)
        wait_for(lambda: "TLS certificate loaded" in server.log())
        self.assertEqual(read_greeting(server.ports["imaps"], context), expected_greeting("imaps"))

    def test_changedCertificateFilesArePickedUp(self):
        """
        Renewed files are noticed by the periodic check, with no signal.
        """
        server = ServerProcess.start(self, roles=("imaps",), tls_options="check_interval = 0.2")
        context = self.renew_certificate(server)
        wait_for(lambda: "TLS certificate loaded" in server.log())
        self.assertEqual(read_greeting(server.ports["imaps"], context), expected_greeting("imaps"))


class BadConfigTests(TestCase):
    """
    Each mistake stops twistd with one readable line and a non-zero status.
    """

    def assertOneLineError(self, config_text: str, *expected: str):
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        config = directory / "bad.toml"
        config.write_text(config_text)
        result = run_twistd(directory, "--config", str(config))
        self.assertNotEqual(result.returncode, 0)
        stderr = result.stderr.decode()
        self.assertNotIn("Traceback", stderr + result.stdout.decode())
        self.assertEqual(stderr.count("\n"), 1, stderr)
        self.assertTrue(stderr.startswith(f"mailsrv: {config}: "), stderr)
        for part in expected:
            self.assertIn(part, stderr)

    def test_unknownKey(self):
        self.assertOneLineError('[server]\nhost = "x"\n', "server.host: unknown key")

    def test_badPort(self):
        self.assertOneLineError('[listeners]\nsmtp = "tcp:70000"\n',
                                "listeners.smtp: port must be a number from 0 to 65535")

    def test_missingCertificate(self):
        self.assertOneLineError('[tls]\ncertificate = "missing.pem"\nkey = "missing.key"\n',
                                "tls.certificate: file not found")

    def test_portInUse(self):
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        config, _ = write_test_config(directory, roles=())
        text = config.read_text().replace('smtp = []', f'smtp = "tcp:{port}:interface=127.0.0.1"')
        config.write_text(text)
        result = run_twistd(directory, "--config", str(config))
        self.assertNotEqual(result.returncode, 0)
        message = (f"mailsrv: listeners.smtp: cannot listen on tcp:{port}:"
                   "interface=127.0.0.1: Address already in use")
        self.assertEqual(result.stderr.decode(), message + "\n")
        self.assertIn(message, result.stdout.decode())
        self.assertNotIn("Traceback", result.stdout.decode())


class PrivilegeTests(TestCase):
    def test_uidOptionsParsed(self):
        """
        C{twistd --uid/--gid mailsrv} hands the target user to mailsrv, which
        gives it the data folder it creates.
        """
        options = ServerOptions()
        options.parseOptions(["--uid", "65534", "--gid", "65534", "mailsrv", "--data", "/x"])
        self.assertEqual(_owner(options.subOptions), (65534, 65534))
        self.assertEqual(options.subOptions["data"], "/x")
        options = ServerOptions()
        options.parseOptions(["mailsrv"])
        self.assertIsNone(_owner(options.subOptions))
        with self.assertRaises(UsageError):
            ServerOptions().parseOptions(["mailsrv", "--frobnicate"])

    def test_privilegedPortsThenDropRoot(self):
        """
        Started as root with --uid/--gid, the server binds ports below 1024,
        then runs as that user with a data folder it owns, and still serves
        TLS and reloads its certificate.
        """
        if os.geteuid() != 0:
            raise SkipTest("binding a port below 1024 needs root")
        directory = Path(tempfile.mkdtemp(prefix="mailsrv-priv-"))
        self.addCleanup(subprocess.run, ["rm", "-rf", str(directory)])
        directory.chmod(0o755)
        ports = free_privileged_ports(2)
        config = directory / "mailsrv.toml"
        listeners = "\n".join(f"{role} = []" for role in ROLES if role not in ("smtp", "pop3s"))
        config.write_text(f'[server]\ndata_dir = "data"\n[listeners]\n{listeners}\n'
                          f'smtp = "tcp:{ports[0]}:interface=127.0.0.1"\n'
                          f'pop3s = "tcp:{ports[1]}:interface=127.0.0.1"\n')
        config.chmod(0o644)
        data = directory / "data"
        server = ServerProcess(directory, ["--config", str(config)],
                               data / "tls" / "cert.pem", data,
                               twistd_args=("--uid=65534", "--gid=65534"))
        self.addCleanup(server.stop)
        server.run(expect_roles=("smtp", "pop3s"))
        self.assertEqual(server.ports, {"smtp": ports[0], "pop3s": ports[1]})

        def uids() -> set[str]:
            status = Path(f"/proc/{server.process.pid}/status").read_text()
            [found] = [line.split()[1:] for line in status.splitlines()
                       if line.startswith("Uid:")]
            return set(found)

        # The listeners log before twistd sheds root (privilegedStartService
        # comes first): wait for the switch rather than read the uid at once.
        wait_for(lambda: uids() != {"0"})
        self.assertEqual(uids(), {"65534"})
        for path in (data, data / "tls", data / "tls" / "cert.pem", data / "tls" / "key.pem"):
            self.assertEqual((path.stat().st_uid, path.stat().st_gid), (65534, 65534), path)
        check_greetings(self, server.ports, server.ca_path)
        server.signal(signal.SIGHUP)
        wait_for(lambda: "TLS certificate loaded" in server.log())
        self.assertNotIn("TLS reload failed", server.log())


def free_privileged_ports(count: int) -> list[int]:
    found = []
    for port in range(1000, 600, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise SkipTest("no free port below 1024")
