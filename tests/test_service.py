"""
Tests for L{mailsrv.service}: the server built in-process by make_service,
with real listeners on 127.0.0.1.
"""

import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailsrv.config import IMPLICIT_TLS_ROLES, ROLES, load_settings
from mailsrv.cred.credentials import PeerUsernamePassword
from mailsrv.cred.realm import IMailAccount
from mailsrv.service import PROTOCOL_OF_ROLE, ListenError, ReloadOnHangup, make_service
from tests.server import write_test_config
from tests.sourcetree import server_environment

GREETINGS = {
    "smtp": b"220 localhost ESMTP mailsrv\r\n",
    "pop3": b"+OK mailsrv POP3 ready\r\n",
}

_IMAP_GREETING = (b"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE %s] "
                  b"localhost IMAP4rev1 mailsrv ready\r\n")


def expected_greeting(role: str) -> bytes:
    """
    A listener's greeting: IMAP's says what it offers before login, which
    differs with and without TLS (RFC 3501 6.2.3 LOGINDISABLED).
    """
    if role == "imap":
        return _IMAP_GREETING % b"STARTTLS LOGINDISABLED"
    if role == "imaps":
        return _IMAP_GREETING % b"AUTH=PLAIN"
    return GREETINGS[PROTOCOL_OF_ROLE[role]]


def read_greeting(port: int, tls_context: ssl.SSLContext | None = None) -> bytes:
    """
    The server's first line (the greeting), over TLS if given a context.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        conn = tls_context.wrap_socket(raw, server_hostname="localhost") if tls_context else raw
        data = b""
        while b"\r\n" not in data and (chunk := conn.recv(1024)):
            data += chunk
        return data


class MakeServiceTests(TestCase):
    def settings(self, extra=""):
        directory = Path(self.mktemp()).absolute()
        config, self.ca_path = write_test_config(directory, extra)
        return load_settings(config, environ={})

    def start(self, settings):
        service = make_service(settings, reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    async def test_everyRoleListens(self):
        """
        Every role gets a port; plain ones greet at once, implicit-TLS ones
        after a handshake with the configured certificate.  Protocols not
        served yet say so in their own words.
        """
        service = self.start(self.settings())
        ports = {listener.role: listener.port.getHost().port for listener in service.listeners()}
        self.assertEqual(set(ports), set(ROLES))
        client_tls = ssl.create_default_context(cafile=str(self.ca_path))
        for role, port in ports.items():
            context = client_tls if role in IMPLICIT_TLS_ROLES else None
            greeting = await deferToThread(read_greeting, port, context)
            self.assertEqual(greeting, expected_greeting(role), role)

    async def test_selfSignedWhenNoCertificate(self):
        """
        Without [tls] files the server makes its own certificate in a private
        data folder, and its TLS listeners use it.
        """
        settings = self.settings()
        settings = replace(settings, tls=replace(settings.tls, certificate=None, key=None))
        service = self.start(settings)
        self.assertEqual(stat.S_IMODE(settings.data_dir.stat().st_mode), 0o700)
        cert = settings.data_dir / "tls" / "cert.pem"
        [imaps] = [s for s in service.listeners() if s.role == "imaps"]
        context = ssl.create_default_context(cafile=str(cert))
        greeting = await deferToThread(read_greeting, imaps.port.getHost().port, context)
        self.assertEqual(greeting, expected_greeting("imaps"))

    async def test_userAddedWhileRunning(self):
        """
        C{mailsrv user add} run beside a running server (same config, same
        data folder) lets that user log in at once, through the server's
        own portal; a wrong password is still refused.
        """
        settings = self.settings()
        service = self.start(settings)
        self.assertEqual(await service.checker.users(), {})
        result = await deferToThread(
            subprocess.run,
            [sys.executable, "-m", "mailsrv.cli", "--config", str(settings.source),
             "user", "add", "alice@localhost"],
            input=b"wonderland\n", capture_output=True, env=server_environment(), timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        _, avatar, _ = await service.portal.login(
            PeerUsernamePassword(b"alice@localhost", b"wonderland", "127.0.0.1"), None,
            IMailAccount)
        self.assertEqual(avatar.address, "alice@localhost")
        with self.assertRaises(UnauthorizedLogin):
            await service.portal.login(
                PeerUsernamePassword(b"alice@localhost", b"wonderlan", "127.0.0.1"), None,
                IMailAccount)

    def test_portInUse(self):
        """
        A port that cannot be opened is one clear error naming the listener.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = self.settings()
        settings = replace(settings, listeners=replace(
            settings.listeners, imap=(f"tcp:{port}:interface=127.0.0.1",)))
        service = make_service(settings, reactor=reactor)
        with self.assertRaises(ListenError) as caught:
            service.privilegedStartService()
        self.assertEqual(str(caught.exception),
                         f"listeners.imap: cannot listen on tcp:{port}:interface=127.0.0.1: "
                         "Address already in use")
        for listener in service.listeners():
            if listener.port is not None:
                listener.port.stopListening()

    async def test_sighupReloads(self):
        """
        SIGHUP calls reload() on the reactor thread; stopping the service
        gives the signal back.
        """
        reloaded = Deferred()

        class Target:
            def reload(self):
                reloaded.callback("reloaded")

        before = signal.getsignal(signal.SIGHUP)
        hangup = ReloadOnHangup(Target(), reactor)
        hangup.startService()
        os.kill(os.getpid(), signal.SIGHUP)
        self.assertEqual(await reloaded, "reloaded")
        hangup.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)
