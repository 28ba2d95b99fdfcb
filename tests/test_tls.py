"""
Tests for L{mailsrv.tls}: the self-signed certificate, and a reloadable
server context checked with real TLS handshakes over loopback.
"""

import datetime
import hashlib
import shutil
import socket
import ssl
import stat
from pathlib import Path

from cryptography import x509
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailsrv import tls as tls_module
from mailsrv.config import ConfigError
from mailsrv.tls import (
    ServerTLS,
    create_self_signed,
    ensure_self_signed,
    needs_new_self_signed,
)


class Greeter(Protocol):
    def connectionMade(self):
        self.transport.write(b"hello\r\n")


def handshake(port: int, cafile: Path, server_hostname="localhost",
              maximum=ssl.TLSVersion.MAXIMUM_SUPPORTED):
    """
    Connect with Python's ssl, check the name, return the server
    certificate's SHA-256 and the first bytes received.
    """
    context = ssl.create_default_context(cafile=str(cafile))
    context.maximum_version = maximum
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as conn:
            return hashlib.sha256(conn.getpeercert(binary_form=True)).hexdigest(), conn.recv(7)


def fingerprint(cert_path: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_path.read_text())).hexdigest()


class SelfSignedTests(SynchronousTestCase):
    def setUp(self):
        self.directory = Path(self.mktemp())
        self.cert, self.key = self.directory / "cert.pem", self.directory / "key.pem"

    def test_namesAndKeyMode(self):
        """
        The certificate names the host, localhost, 127.0.0.1 and ::1 (so
        clients that check names can use it as their CA); the key is private.
        """
        create_self_signed(self.cert, self.key, "mail.example.org")
        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(names.get_values_for_type(x509.DNSName),
                         ["mail.example.org", "localhost"])
        self.assertEqual([str(a) for a in names.get_values_for_type(x509.IPAddress)],
                         ["127.0.0.1", "::1"])
        self.assertEqual(stat.S_IMODE(self.key.stat().st_mode), 0o600)

    def test_renewal(self):
        """
        A new certificate is made when it is missing, names another host,
        or is about to expire; not otherwise.
        """
        self.assertTrue(needs_new_self_signed(self.cert, "localhost"))
        create_self_signed(self.cert, self.key, "localhost")
        self.assertFalse(needs_new_self_signed(self.cert, "localhost"))
        self.assertTrue(needs_new_self_signed(self.cert, "mx.example.org"))
        self.patch(tls_module, "_RENEW_BEFORE", datetime.timedelta(days=1000))
        self.assertTrue(needs_new_self_signed(self.cert, "localhost"))

    def test_ensureKeepsAGoodCertificate(self):
        data = self.directory / "data"
        cert, key = ensure_self_signed(data, "localhost")
        before = cert.read_bytes()
        self.assertEqual(ensure_self_signed(data, "localhost"), (cert, key))
        self.assertEqual(cert.read_bytes(), before)

    def test_mismatchedKey(self):
        """
        A key that does not belong to the certificate is one clear error.
        """
        create_self_signed(self.cert, self.key, "localhost")
        other = self.directory / "other"
        create_self_signed(other / "cert.pem", other / "key.pem", "localhost")
        with self.assertRaises(ConfigError) as caught:
            ServerTLS(self.cert, other / "key.pem")
        self.assertIn("cannot use this certificate and key", str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))

    def test_notPEM(self):
        self.cert.parent.mkdir(parents=True)
        self.cert.write_text("not a certificate")
        self.key.write_text("not a key")
        with self.assertRaises(ConfigError):
            ServerTLS(self.cert, self.key)


class ServerTLSTests(TestCase):
    def setUp(self):
        self.directory = Path(self.mktemp())
        self.cert, self.key = self.directory / "cert.pem", self.directory / "key.pem"
        create_self_signed(self.cert, self.key, "localhost")
        self.first = self.directory / "first.pem"
        shutil.copy(self.cert, self.first)

    async def listen(self, min_version="1.2") -> tuple[ServerTLS, int]:
        server_tls = ServerTLS(self.cert, self.key, min_version)
        factory = TLSMemoryBIOFactory(server_tls, False, Factory.forProtocol(Greeter))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        return server_tls, port.getHost().port

    async def test_handshakeChecksNames(self):
        """
        Clients that trust the certificate verify it by DNS name and by IP.
        """
        _, port = await self.listen()
        digest, data = await deferToThread(handshake, port, self.cert)
        self.assertEqual((digest, data), (fingerprint(self.cert), b"hello\r\n"))
        digest, _ = await deferToThread(handshake, port, self.cert, "127.0.0.1")
        self.assertEqual(digest, fingerprint(self.cert))

    async def test_reloadWhenFilesChange(self):
        """
        New files on disk are picked up by the next poll, and new connections
        get the new certificate.
        """
        server_tls, port = await self.listen()
        self.assertFalse(server_tls.reload_if_changed())
        create_self_signed(self.cert, self.key, "localhost")
        self.assertTrue(server_tls.reload_if_changed())
        digest, _ = await deferToThread(handshake, port, self.cert)
        self.assertEqual(digest, fingerprint(self.cert))
        self.assertNotEqual(digest, fingerprint(self.first))

    async def test_badReloadKeepsTheOldCertificate(self):
        server_tls, port = await self.listen()
        self.key.write_text("truncated")
        self.assertFalse(server_tls.reload())
        self.assertFalse(server_tls.reload_if_changed())
        digest, _ = await deferToThread(handshake, port, self.first)
        self.assertEqual(digest, fingerprint(self.first))

    async def test_minimumVersion(self):
        """
        With min_version 1.3 a TLS 1.2 client is refused; 1.2 is the floor
        by default.
        """
        _, port = await self.listen("1.3")
        with self.assertRaises(ssl.SSLError):
            await deferToThread(handshake, port, self.cert, maximum=ssl.TLSVersion.TLSv1_2)
        _, port = await self.listen("1.2")
        digest, _ = await deferToThread(handshake, port, self.cert,
                                        maximum=ssl.TLSVersion.TLSv1_2)
        self.assertEqual(digest, fingerprint(self.cert))
