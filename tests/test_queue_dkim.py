"""
Tests for L{mailsrv.queue.dkim}: signatures checked with dkimpy's verifier
against the published key record, key loading and key creation.
"""

import base64
import re
import stat
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from dkim.util import parse_tag_value
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from mailsrv.config import ConfigError, DomainSettings
from mailsrv.queue.dkim import DKIMSigner, create_key, txt_record

MESSAGE = (b"From: Alice <alice@example.org>\r\n"
           b"To: Bob <bob@example.com>\r\n"
           b"Subject: Lunch\r\n"
           b"Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
           b"Message-ID: <1@example.org>\r\n"
           b"\r\n"
           b"Noon at the usual place?\r\n")

#: A 512-bit key (openssl genrsa -traditional 512), too short to sign with.
SHORT_KEY = b"""\
-----BEGIN RSA PRIVATE KEY-----
MIIBOwIBAAJBAM/dhqdzvRX7hz7i053Ou/YHq+tjsf8vZR21cHnvJdSTB22qKIGk
k+uZryN+0fRVVAcIJ9L892+BlVNBLfW8MnUCAwEAAQJAAqrcFIAGuCZ/KM5uWsMR
ZGnaye2Alj68dHIknFv2R1EJxdWXge84cjhsaWWfiOeOucSO8gdyGG0MIh2JZ04y
YQIhAO618QsBG0dko9Kjcwn6aHcucdTylLB9Y/3zVQx2Vd3JAiEA3uuqGHi0aGXS
Dd4YSEWxUB1Lh1vf3kV6Q0+V0+x/FU0CIQDUEgGORDJm78r3BEzcbYHHeBSbGdPt
I8jkwPwq8SqBuQIgJeKjW9lXv85eLqEqO04s3lK8PVrt5xajusDR09yDlJkCIQC7
gQB28FXXULEhTAPX6F898B98hEznaf3kmmgSFkrSLA==
-----END RSA PRIVATE KEY-----
"""


def tags(signature: bytes) -> dict[bytes, bytes]:
    """
    The tag=value pairs of a DKIM-Signature header field (RFC 6376 section 3.5).
    """
    name, _, value = signature.partition(b":")
    assert name == b"DKIM-Signature", signature
    return parse_tag_value(value)


class SignerTests(SynchronousTestCase):
    def setUp(self):
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        #: The DNS: TXT values by query name, as dkimpy asks for them.
        self.records: dict[bytes, bytes] = {}
        self.queries: list[bytes] = []

    def dnsfunc(self, name, timeout=5):
        self.queries.append(name)
        return self.records.get(name)

    def domain(self, name: str, selector: str = "mailsrv", bits: int = 1024) -> DomainSettings:
        """
        A domain with a new key, published in C{self.records}.
        """
        path = self.folder / f"{name}.{selector}.pem"
        value = create_key(path, bits)
        self.records[f"{selector}._domainkey.{name}.".lower().encode()] = value.encode()
        return DomainSettings(dkim_key=path, dkim_selector=selector)

    def verify(self, signed: bytes) -> bool:
        return dkim.verify(signed, dnsfunc=self.dnsfunc)

    def test_signsForFromDomain(self):
        """
        The From: domain signs with its selector, rsa-sha256 and
        relaxed/relaxed, and the signature verifies against the published
        key (RFC 6376 section 6.1.3).
        """
        signer = DKIMSigner({"example.org": self.domain("example.org", "s2024")})
        signature = signer.signature(MESSAGE, "alice@example.org")
        self.assertTrue(signature.endswith(b"\r\n"))
        self.assertTrue(self.verify(signature + MESSAGE))
        self.assertEqual(self.queries, [b"s2024._domainkey.example.org."])
        fields = tags(signature)
        self.assertEqual((fields[b"d"], fields[b"s"], fields[b"a"], fields[b"c"]),
                         (b"example.org", b"s2024", b"rsa-sha256", b"relaxed/relaxed"))

    def test_signedHeaders(self):
        """
        The recommended header fields present are signed, and From once
        more than it occurs so that another cannot be added (RFC 6376
        section 5.4.2).
        """
        signer = DKIMSigner({"example.org": self.domain("example.org")})
        signed = [h.strip() for h in
                  tags(signer.signature(MESSAGE, ""))[b"h"].split(b":")]
        self.assertEqual(sorted(signed), [b"date", b"from", b"from", b"message-id",
                                          b"subject", b"to"])

    def test_alteredMessageFails(self):
        """
        A message changed after signing, in the body or in a signed header
        field, no longer verifies.
        """
        signer = DKIMSigner({"example.org": self.domain("example.org")})
        signature = signer.signature(MESSAGE, "alice@example.org")
        self.assertTrue(self.verify(signature + MESSAGE))
        self.assertFalse(self.verify(signature + MESSAGE.replace(b"Noon", b"Nine")))
        self.assertFalse(self.verify(signature + MESSAGE.replace(b"Lunch", b"Dinner")))

    def test_relaxedCanonicalization(self):
        """
        Refolding a header field and adding trailing whitespace, as relays
        may, keep the signature valid (RFC 6376 section 3.4).
        """
        signer = DKIMSigner({"example.org": self.domain("example.org")})
        signature = signer.signature(MESSAGE, "alice@example.org")
        relayed = MESSAGE.replace(b"Subject: Lunch", b"Subject:\r\n  Lunch") \
            .replace(b"place?\r\n", b"place?  \r\n")
        self.assertTrue(self.verify(signature + relayed))

    def test_fromDomainFirst(self):
        """
        With keys for both, the From: domain signs rather than the envelope
        sender's, so that the signature aligns for DMARC.
        """
        signer = DKIMSigner({"example.org": self.domain("example.org"),
                             "example.net": self.domain("example.net")})
        signature = signer.signature(MESSAGE, "list@example.net")
        self.assertEqual(tags(signature)[b"d"], b"example.org")
        self.assertTrue(self.verify(signature + MESSAGE))

    def test_fallbackToSender(self):
        """
        When the From: domain has no key, the envelope sender's domain signs.
        """
        signer = DKIMSigner({"example.net": self.domain("example.net")})
        signature = signer.signature(MESSAGE, "forwarder@example.net")
        self.assertEqual(tags(signature)[b"d"], b"example.net")
        self.assertTrue(self.verify(signature + MESSAGE))

    def test_noKey(self):
        """
        No signature when neither the From: nor the envelope sender domain
        has a key, for a bounce (empty sender), or when no domain has one.
        """
        signer = DKIMSigner({"example.net": self.domain("example.net"),
                             "localhost": DomainSettings()})
        self.assertEqual(signer.signature(MESSAGE, "someone@example.com"), b"")
        self.assertEqual(signer.signature(MESSAGE, ""), b"")
        self.assertEqual(DKIMSigner({"localhost": DomainSettings()}).signature(
            MESSAGE, "alice@localhost"), b"")

    def test_caseInsensitive(self):
        """
        Domains match whatever their case in the configuration, the From:
        header field or the envelope sender.
        """
        signer = DKIMSigner({"Example.ORG": self.domain("example.org")})
        shouting = MESSAGE.replace(b"alice@example.org", b"ALICE@EXAMPLE.Org")
        self.assertEqual(tags(signer.signature(shouting, ""))[b"d"], b"example.org")
        foreign = MESSAGE.replace(b"alice@example.org", b"alice@example.com")
        self.assertEqual(tags(signer.signature(foreign, "Alice@Example.Org"))[b"d"],
                         b"example.org")

    def test_malformedMessages(self):
        """
        A message dkimpy cannot sign goes out unsigned with one warning (no
        From: to sign, RFC 6376 section 5.4; a header line that is not a
        field), and one that trips dkimpy up logs the traceback once.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        signer = DKIMSigner({"example.org": self.domain("example.org")})
        no_from = b"Subject: hi\r\n\r\nbody\r\n"
        for message in (no_from, b"\xff\xfe garbage\x00\r\n\r\n", b""):
            self.assertEqual(signer.signature(message, "alice@example.org"), b"")
        warnings = [e for e in events if e.get("log_namespace") == "mailsrv.queue.dkim"]
        self.assertEqual([e["log_level"] for e in warnings], [LogLevel.warn] * 3)
        self.assertIn("The From header field MUST be signed", warnings[0]["error"])
        self.assertEqual(signer.signature(b" continued\r\nFrom: alice@example.org\r\n\r\n",
                                          "alice@example.org"), b"")
        self.assertEqual(len(self.flushLoggedErrors(IndexError)), 1)

    def test_keyFormats(self):
        """
        A PKCS#1 key ("RSA PRIVATE KEY", what C{openssl genrsa -traditional}
        writes) with CRLF line ends signs too, not only the PKCS#8 keys that
        L{create_key} writes.
        """
        settings = self.domain("example.org")
        key = serialization.load_pem_private_key(settings.dkim_key.read_bytes(), None)
        pkcs1 = key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())
        self.assertTrue(pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----\n"))
        settings.dkim_key.write_bytes(pkcs1.replace(b"\n", b"\r\n"))
        signer = DKIMSigner({"example.org": settings})
        self.assertTrue(self.verify(signer.signature(MESSAGE, "") + MESSAGE))

    def assertConfigError(self, domain: DomainSettings, *expected: str):
        with self.assertRaises(ConfigError) as caught:
            DKIMSigner({"localhost": DomainSettings(), "example.org": domain})
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        for text in expected:
            self.assertIn(text, message)

    def test_badKeys(self):
        """
        A key file that is not a PEM RSA key, cannot be read, or is shorter
        than RFC 6376 section 3.3.3 allows stops start-up with one line that
        names the key.
        """
        garbage = self.folder / "garbage.pem"
        garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n"
                            b"-----END PRIVATE KEY-----\n")
        self.assertConfigError(DomainSettings(dkim_key=garbage),
                               f"domains.example.org.dkim_key: {garbage}: "
                               "not an RSA private key in PEM")
        self.assertConfigError(DomainSettings(dkim_key=self.folder),
                               f"domains.example.org.dkim_key: {self.folder}: cannot read")
        short = self.folder / "short.pem"
        short.write_bytes(SHORT_KEY)
        self.assertConfigError(DomainSettings(dkim_key=short),
                               "domains.example.org.dkim_key", "512 bits", "at least 1024")

    def test_badSelector(self):
        """
        A selector that is not a sequence of DNS labels (RFC 6376 section
        3.1) is a configuration error.
        """
        settings = self.domain("example.org", "mailsrv")
        self.assertConfigError(DomainSettings(dkim_key=settings.dkim_key,
                                              dkim_selector="my selector"),
                               "domains.example.org.dkim_selector: expected a selector")


class CreateKeyTests(SynchronousTestCase):
    def setUp(self):
        self.folder = Path(self.mktemp())
        self.folder.mkdir()

    def test_keyAndRecord(self):
        """
        The key is PKCS#8 PEM readable by its owner only, and the record
        value holds its public half (RFC 6376 section 3.6.1).
        """
        path = self.folder / "key.pem"
        value = create_key(path)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        self.assertEqual(key.key_size, 2048)
        self.assertTrue(path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n"))
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        self.assertEqual(value, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode())

    def test_refusesToOverwrite(self):
        """
        An existing file is left alone unless replacing is asked for, which
        writes a new key with the same mode.
        """
        path = self.folder / "key.pem"
        create_key(path, 1024)
        before = path.read_bytes()
        self.assertRaises(FileExistsError, create_key, path, 1024)
        self.assertEqual(path.read_bytes(), before)
        create_key(path, 1024, replace=True)
        self.assertNotEqual(path.read_bytes(), before)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual(sorted(p.name for p in self.folder.iterdir()), ["key.pem"])

    def test_keySizes(self):
        """
        Keys shorter than 1024 bits (RFC 6376 section 3.3.3) or longer than
        4096 are refused before anything is written.
        """
        for bits in (512, 8192):
            self.assertRaises(ValueError, create_key, self.folder / "key.pem", bits)
        self.assertEqual(list(self.folder.iterdir()), [])


class TXTRecordTests(SynchronousTestCase):
    def test_splitsLongValues(self):
        """
        A 2048-bit key record is split into quoted strings of at most 255
        characters that join back into the value (RFC 6376 section 3.6.2.2).
        """
        value = create_key(Path(self.mktemp()))
        line = txt_record("example.org", "mailsrv", value)
        self.assertTrue(line.startswith('mailsrv._domainkey.example.org. IN TXT ( "'), line)
        self.assertTrue(line.endswith('" )'), line)
        strings = re.findall(r'"([^"]*)"', line)
        self.assertGreater(len(strings), 2)
        self.assertTrue(all(len(s) <= 255 for s in strings), strings)
        self.assertEqual("".join(strings), value)
        self.assertEqual(strings[0], "v=DKIM1; k=rsa; ")

    def test_shortValue(self):
        """
        A value that fits is one string; quotes and backslashes are escaped.
        """
        self.assertEqual(txt_record("example.org", "s", 'v=DKIM1; n="a\\b"'),
                         's._domainkey.example.org. IN TXT ( "v=DKIM1; n=\\"a\\\\b\\"" )')
