"""
Server TLS: one reloadable context shared by STARTTLS and implicit-TLS
listeners, and the self-signed certificate a new server starts with.
Client TLS: the contexts the outbound queue uses, per security policy.

A reload (SIGHUP, or the certificate files changing on disk) swaps the
context for new connections; connections already open keep theirs.  A
broken reload is logged and the previous certificate stays in use.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from zope.interface import implementer

from mailsrv.config import ConfigError
from mailsrv.files import write_atomically
from mailsrv.logs import get_logger

log = get_logger(__name__)

_MIN_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}

#: Self-signed certificates are made anew when they have less left than this.
_RENEW_BEFORE = datetime.timedelta(days=30)
_LIFETIME = datetime.timedelta(days=825)


def self_signed_paths(data_dir: Path) -> tuple[Path, Path]:
    """
    Where the server keeps the certificate it makes for itself.
    """
    return data_dir / "tls" / "cert.pem", data_dir / "tls" / "key.pem"


def certificate_names(hostname: str) -> list[x509.GeneralName]:
    """
    The subjectAltNames of a self-signed certificate: the host name, and the
    loopback names clients use on a development machine.
    """
    names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        names.append(x509.DNSName("localhost"))
    names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
              x509.IPAddress(ipaddress.ip_address("::1"))]
    return names


def create_self_signed(cert_path: Path, key_path: Path, hostname: str) -> None:
    """
    Write a new key and a self-signed certificate for C{hostname}.

    Both files are written beside their final name and renamed into place,
    the key readable by its owner only.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.SubjectAlternativeName(certificate_names(hostname)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    key_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(key_path, key_pem, 0o600)
    write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def needs_new_self_signed(cert_path: Path, hostname: str) -> bool:
    """
    Whether the self-signed certificate is missing, unreadable, about to
    expire, or no longer names C{hostname}.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return True
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return left < _RENEW_BEFORE or hostname not in names.get_values_for_type(x509.DNSName)


def ensure_self_signed(data_dir: Path, hostname: str) -> tuple[Path, Path]:
    """
    Return the self-signed certificate and key paths, making them if needed.
    """
    cert_path, key_path = self_signed_paths(data_dir)
    if needs_new_self_signed(cert_path, hostname) or not key_path.is_file():
        create_self_signed(cert_path, key_path, hostname)
        log.info("Created a self-signed certificate for {hostname} in {path}",
                 hostname=hostname, path=str(cert_path))
    return cert_path, key_path


def _file_signature(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    The server side of TLS for every listener, reloadable in place.

    Give it to C{transport.startTLS()} for STARTTLS or to
    C{TLSMemoryBIOFactory} for implicit TLS.
    """

    def __init__(self, cert_path: Path, key_path: Path, min_version: str = "1.2"):
        self.cert_path = cert_path
        self.key_path = key_path
        self._minimum = _MIN_VERSIONS[min_version]
        self._signature = self._signatures()
        self._context = self._load()

    def _signatures(self):
        return _file_signature(self.cert_path), _file_signature(self.key_path)

    def _load(self) -> SSL.Context:
        """
        Build a context from the PEM files.

        @raise ConfigError: if the files are missing, unreadable or do not
            belong together.
        """
        context = CertificateOptions(raiseMinimumTo=self._minimum).getContext()
        try:
            context.use_certificate_chain_file(str(self.cert_path))
            context.use_privatekey_file(str(self.key_path))
            context.check_privatekey()
        except SSL.Error as e:
            reason = "; ".join(str(part[2]) for part in e.args[0] if len(part) > 2) or str(e)
            raise ConfigError(f"{self.cert_path}, {self.key_path}: cannot use this "
                              f"certificate and key: {reason}") from None
        return context

    def serverConnectionForTLS(self, tlsProtocol):
        return SSL.Connection(self._context, None)

    def reload(self) -> bool:
        """
        Load the files again now; keep the old context if that fails.

        @return: whether the new certificate is in use.
        """
        signature = self._signatures()
        try:
            context = self._load()
        except ConfigError as e:
            log.error("TLS reload failed, keeping the previous certificate: {error}",
                      error=str(e))
            return False
        self._context = context
        self._signature = signature
        log.info("TLS certificate loaded from {path}", path=str(self.cert_path))
        return True

    def reload_if_changed(self) -> bool:
        """
        Reload when either file changed since the last load (polled).
        """
        if self._signatures() == self._signature:
            return False
        return self.reload()


def client_tls(policy: str, hostname: str, ca_file: Path | None = None):
    """
    The client side of TLS for an outbound connection to C{hostname}.

    C{"verify"} checks the certificate chain (against C{ca_file}, else the
    system's trusted CAs) and the name through service-identity; the other
    policies encrypt without checking, since an MX host's certificate is
    rarely valid for its name and plain text would be the alternative
    (RFC 7435, opportunistic security).
    """
    if policy != "verify":
        return CertificateOptions(verify=False)
    if ca_file is None:
        trust = platformTrust()
    else:
        pem = ca_file.read_bytes()
        blocks = pem.split(b"-----END CERTIFICATE-----")[:-1]
        trust = trustRootFromCertificates(
            [Certificate.loadPEM(block + b"-----END CERTIFICATE-----\n") for block in blocks])
    return optionsForClientTLS(hostname, trustRoot=trust)
