"""
DKIM signatures (RFC 6376) for outgoing mail, and the keys they are made with.

Each local domain may name a private key (C{dkim_key}) and a selector
(C{dkim_selector}); the public half is published in the DNS at
C{<selector>._domainkey.<domain>} (RFC 6376 section 3.6.2.1), which
C{mailsrv dkim create} prints.

Signing uses dkimpy, whose RSA is Python's C{pow()} on integers (not OpenSSL):
a 10 KB message with a 2048-bit key takes about 9 ms, holding the GIL, where
OpenSSL's RSA alone would take 1 ms.
"""

from __future__ import annotations

import base64
import os
import re
from email.utils import getaddresses
from pathlib import Path
from typing import NamedTuple

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from mailsrv.config import ConfigError, DomainSettings
from mailsrv.files import fsync_directory, write_atomically
from mailsrv.logs import get_logger

log = get_logger(__name__)

#: RSA key sizes that signers may use and every verifier must accept: at least
#: 1024 bits (RFC 6376 section 3.3.3), at most 4096 (RFC 8301 section 3.2).
MIN_BITS, MAX_BITS = 1024, 4096

#: RFC 6376 section 3.1: selector = sub-domain *( "." sub-domain ).
_SELECTOR = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")

#: A TXT record character-string holds at most 255 octets (RFC 1035 section 3.3).
_TXT_STRING = 255


def check_selector(selector: str) -> str | None:
    """
    What is wrong with C{selector} as a DNS label sequence, or L{None}.
    """
    if _SELECTOR.fullmatch(selector):
        return None
    return "expected a selector of letters, digits, '-' and '.' like 'mailsrv' or '2024.mx1'"


class _Key(NamedTuple):
    selector: bytes
    pem: bytes


def _load_key(name: str, domain: DomainSettings) -> _Key:
    """
    Read and check one domain's key, so that a bad one stops start-up rather
    than every message going out unsigned.
    """
    problem = check_selector(domain.dkim_selector)
    if problem:
        raise ConfigError(f"domains.{name}.dkim_selector: {problem}")
    path = domain.dkim_key
    where = f"domains.{name}.dkim_key: {path}"
    try:
        # dkimpy finds the PEM body between "--\n" and "\n--" only.
        pem = path.read_bytes().replace(b"\r\n", b"\n")
    except OSError as e:
        raise ConfigError(f"{where}: cannot read: {e.strerror}") from None
    try:
        bits = parse_pem_private_key(pem)["modulus"].bit_length()
    except (UnparsableKeyError, ValueError) as e:
        reason = " ".join(str(e).split())
        raise ConfigError(f"{where}: not an RSA private key in PEM: {reason}") from None
    if bits < MIN_BITS:
        raise ConfigError(f"{where}: the key has {bits} bits; RFC 6376 requires at "
                          f"least {MIN_BITS} (make one with: mailsrv dkim create {name})")
    return _Key(domain.dkim_selector.encode("ascii"), pem)


class DKIMSigner:
    """
    Signs outgoing messages for the domains that have a key.
    """

    def __init__(self, domains: dict[str, DomainSettings]):
        """
        Load every configured key now, once.

        @raise ConfigError: if a key file cannot be read or is not a usable
            RSA key, or a selector is not a DNS name.
        """
        self._keys = {name.lower(): _load_key(name, domain)
                      for name, domain in domains.items() if domain.dkim_key is not None}

    def _signing_domain(self, headers: list, sender: str) -> str | None:
        """
        The From: domain when we hold its key, so that the signature aligns
        for DMARC (RFC 7489 section 3.1.1); else the envelope sender's.
        """
        authors = [value.decode("utf-8", "replace") for name, value in headers
                   if name.lower() == b"from"]
        candidates = [address for _, address in getaddresses(authors)] + [sender]
        for address in candidates:
            domain = address.rpartition("@")[2].lower()
            if "@" in address and domain in self._keys:
                return domain
        return None

    def signature(self, message: bytes, sender: str) -> bytes:
        """
        The DKIM-Signature header field to put in front of C{message}.

        The signature is rsa-sha256 with relaxed/relaxed canonicalization,
        which survives the header refolding and trailing-whitespace changes
        relays make (RFC 6376 section 3.4), over dkimpy's default header
        list: those RFC 6376 section 5.4.1 recommends, with From signed once
        more than it occurs so that a second From cannot be added (section
        5.4.2).  CPU work: call it in a thread.

        @param sender: the envelope sender, C{""} for a bounce.
        @return: the header field ending in CRLF, or C{b""} when no key
            applies or the message cannot be signed (unsigned mail still
            goes out).
        """
        if not self._keys:
            return b""
        domain = None
        try:
            signer = dkim.DKIM(message)
            domain = self._signing_domain(signer.headers, sender)
            if domain is None:
                return b""
            key = self._keys[domain]
            return signer.sign(key.selector, domain.encode("ascii"), key.pem,
                               canonicalize=(b"relaxed", b"relaxed"))
        except dkim.DKIMException as e:
            log.warn("Sending a message from {sender!r} without a DKIM signature: {error}",
                     sender=sender, domain=domain, error=str(e))
        except Exception:
            log.failure("Sending a message from {sender!r} without a DKIM signature",
                        sender=sender, domain=domain)
        return b""


def _public_value(key: rsa.RSAPrivateKey) -> str:
    """
    The key record of RFC 6376 section 3.6.1: p= is the base64 DER
    SubjectPublicKeyInfo.
    """
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


def _write_new(path: Path, data: bytes) -> None:
    """
    Create C{path} readable by its owner only, durably, failing with
    L{FileExistsError} rather than replacing a key already in use.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def create_key(path: Path, bits: int = 2048, *, replace: bool = False) -> str:
    """
    Write a new RSA private key to C{path} (PKCS#8 PEM, mode 0600) and return
    its public key as the value of the TXT record to publish.

    @param replace: replace an existing file (atomically) instead of raising
        L{FileExistsError}.
    @raise ValueError: if C{bits} is outside L{MIN_BITS}..L{MAX_BITS}.
    """
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"a DKIM key must have {MIN_BITS} to {MAX_BITS} bits, not {bits}")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    if replace:
        write_atomically(path, pem, 0o600)
    else:
        _write_new(path, pem)
    return _public_value(key)


def _character_strings(text: str) -> list[str]:
    """
    C{text} cut into quoted RFC 1035 character-strings of at most 255 octets.
    """
    pieces = [text[i:i + _TXT_STRING] for i in range(0, len(text), _TXT_STRING)]
    return ['"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in pieces]


def txt_record(domain: str, selector: str, value: str) -> str:
    """
    The zone-file line that publishes C{value} for C{selector}.

    A value longer than 255 characters (any RSA key of 2048 bits or more)
    must be split into several strings, which verifiers join with nothing
    between them (RFC 6376 section 3.6.2.2); the tags and the key start
    separate strings for legibility.
    """
    tags, p, key = value.partition("p=")
    strings = _character_strings(tags) + _character_strings(p + key)
    return f"{selector}._domainkey.{domain}. IN TXT ( {' '.join(strings)} )"
