"""
Interop: third-party POP3 clients against the real server (fetchmail and
curl, installed from Debian by .ci/run).  Mail arrives by SMTP; what the
clients retrieve is compared byte for byte with the messages as stored,
read back with imaplib, which also shows what the clients kept or deleted.

fetchmail hands each message to its MDA with LF line ends, and with a
Received field of its own (three lines: the server it polled, its own
version, the local recipient and the time) just before the message's
first Received field (fetchmail 6.4, transact.c readheaders).  The
comparison allows for exactly that.  fetchmail would also add a domain to
addresses without one in address fields, and drop NULs, "From " lines and
empty Status fields; the messages have none of those, so nothing else may
differ.

fetchmail checks the server certificate against DNS names only, never an
IP address, and "localhost" may resolve to ::1 first while the listeners
are on 127.0.0.1 alone: it polls 127.0.0.1 and is told the name to expect
(--sslcommonname localhost), which it checks against the certificate's
DNS names as it would the polled name (a wrong one fails the handshake).
curl checks the certificate's IP address.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import subprocess
import sys

from mailsrv.pop3.server import WHOLE
from tests.clients import output, require, run
from tests.test_imap_interop import InteropTestCase, Stored, unix
from tests.test_imap_server import ALICE, PASSWORD
from tests.test_pop3_server import ATTACHMENT, MESSAGE, POP3TestCase

#: Larger than the server sends in one write: it is read and sent in
#: chunks, and the server waits while a client (fetchmail, feeding its
#: MDA) reads slowly.
LARGE = MESSAGE.replace(ATTACHMENT, ATTACHMENT * 90)

#: fetchmail's MDA: each message into the next numbered file of a folder.
MDA = (
    "import pathlib, sys\n"
    "folder = pathlib.Path(sys.argv[1])\n"
    "(folder / str(len(list(folder.iterdir())) + 1)).write_bytes(sys.stdin.buffer.read())\n")

#: The Received field fetchmail adds when it polls 127.0.0.1 by POP3 and
#: delivers to one local user, before the first one the server added.
FETCHMAIL_RECEIVED = re.compile(
    rb"(?m)^Received: from 127\.0\.0\.1 \[127\.0\.0\.1\]\n"
    rb"\tby [^\n]+ with POP3 \(fetchmail-[^\n]+\)\n"
    rb"\tfor <[^\n]+> \(single-drop\); [^\n]+\n"
    rb"(?=Received: from \[127\.0\.0\.1\] \(\[127\.0\.0\.1\]\)\n\tby localhost \(mailsrv\))")


def without_fetchmail_received(message: bytes) -> bytes:
    """
    A message as fetchmail's MDA got it, less the Received field that
    fetchmail added.
    """
    header, blank, body = message.partition(b"\n\n")
    header, added = FETCHMAIL_RECEIVED.subn(b"", header, count=1)
    if not added:
        raise AssertionError(f"no Received field from fetchmail in {header!r}")
    return header + blank + body


class POP3InteropTestCase(POP3TestCase, InteropTestCase):
    """
    The POP3 listeners (from POP3TestCase), with a folder for the clients'
    files and imaplib's view of the store (from InteropTestCase).
    """

    def fill(self, *messages: bytes) -> list[Stored]:
        """
        Deliver C{messages} to alice by SMTP; return them as stored, with
        the trace fields SMTP added, in order.
        """
        for message in messages:
            self.deliver(message)
        self.wait_for_inbox(len(messages))
        stored = self.server_messages("INBOX")
        for copy, message in zip(stored, messages, strict=True):
            self.assertTrue(copy.data.endswith(message))
        return stored

    def assert_same_messages(self, got: list[bytes], expected: list[bytes]) -> None:
        """
        assertEqual for messages of a megabyte: a failure shows where they
        first differ rather than both whole.
        """
        self.assertEqual(len(got), len(expected))
        for number, (a, b) in enumerate(zip(got, expected, strict=True), 1):
            if a != b:
                at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                          min(len(a), len(b)))
                near = slice(max(at - 60, 0), at + 60)
                self.fail(f"message {number} ({len(a)} octets, not {len(b)}) differs at octet "
                          f"{at}: {a[near]!r} != {b[near]!r}")

    def assert_kept(self, stored: list[Stored]) -> None:
        """
        The INBOX still holds the stored messages unchanged, all \\Seen
        now that a client retrieved them.
        """
        after = self.server_messages("INBOX")
        self.assertEqual([(s.flags, s.internal_date) for s in after],
                         [({b"\\Seen"}, s.internal_date) for s in stored])
        self.assert_same_messages([s.data for s in after], [s.data for s in stored])


class FetchmailTests(POP3InteropTestCase):
    def setUp(self):
        super().setUp()
        self.mail = self.home / "delivered"
        self.mail.mkdir()
        self.mda = self.home / "mda.py"
        self.mda.write_text(MDA)
        # The password can only come from a terminal or from a run control
        # file, which fetchmail refuses if others may read it.
        self.rc = self.home / "fetchmailrc"
        self.rc.write_text(f'poll 127.0.0.1 user "{ALICE}" password "{PASSWORD}"\n')
        self.rc.chmod(0o600)

    def fetchmail(self, listener: str, *options: str
                  ) -> tuple[subprocess.CompletedProcess, list[bytes]]:
        """
        Poll alice's maildrop once on the C{listener} role, "pop3s"
        (implicit TLS) or "pop3" (STLS), with the test CA; return
        fetchmail's result and the messages its MDA got in this run, in
        order.
        """
        require("fetchmail")
        before = len(list(self.mail.iterdir()))
        mda = shlex.join([sys.executable, "-I", str(self.mda), str(self.mail)])
        # Run as root, fetchmail starts the MDA as the user named by
        # $FETCHMAILUSER, $LOGNAME or $USER, who may not be able to write
        # in the test's folder: name the user that we are.
        user = pwd.getpwuid(os.geteuid()).pw_name
        result = run(["env", f"FETCHMAILUSER={user}", "fetchmail", "--fetchmailrc", str(self.rc),
                      "--nodetach", "--nosyslog", "--verbose", "--timeout", "20",
                      "--pidfile", str(self.home / "fetchmail.pid"),
                      "--idfile", str(self.home / "fetchids"),
                      "--protocol", "POP3", "--port", str(self.ports[listener]),
                      *(["--ssl"] if listener == "pop3s" else []), "--sslproto", "TLS1.2+",
                      "--sslcertck", "--sslcertfile", str(self.ca),
                      "--sslcommonname", "localhost", "--mda", mda, *options, "127.0.0.1"],
                     home=self.home)
        files = sorted(self.mail.iterdir(), key=lambda p: int(p.name))
        return result, [p.read_bytes() for p in files[before:]]

    async def test_keep(self):
        """
        fetchmail --keep over implicit TLS (RFC 8314) retrieves every
        message exactly (RFC 1939 RETR, dot-stuffed and unstuffed) and
        leaves it on the server, \\Seen; the next run finds by UIDL that
        it has them all and retrieves nothing.
        """
        stored = await self.in_thread(self.fill, MESSAGE, LARGE)
        result, messages = await self.in_thread(self.fetchmail, "pop3s", "--keep")
        self.assertEqual(result.returncode, 0, output(result))
        self.assertGreater(len(stored[1].data), WHOLE)
        self.assert_same_messages([without_fetchmail_received(m) for m in messages],
                                  [unix(s.data) for s in stored])
        await self.in_thread(self.assert_kept, stored)

        result, messages = await self.in_thread(self.fetchmail, "pop3s", "--keep")
        # fetchmail's exit status 1: no mail.
        self.assertEqual((result.returncode, messages), (1, []), output(result))
        self.assertIn("2 messages (2 seen)", output(result))

    async def test_delete(self):
        """
        fetchmail without --keep, over STLS (RFC 2595; the server takes no
        password before it), retrieves every message exactly and deletes
        them (RFC 1939 DELE, QUIT): the INBOX is empty afterwards.
        """
        stored = await self.in_thread(self.fill, MESSAGE, LARGE)
        result, messages = await self.in_thread(self.fetchmail, "pop3")
        self.assertEqual(result.returncode, 0, output(result))
        self.assert_same_messages([without_fetchmail_received(m) for m in messages],
                                  [unix(s.data) for s in stored])
        self.assertEqual(await self.in_thread(self.server_messages, "INBOX"), [])


class CurlTests(POP3InteropTestCase):
    def curl(self, url: str, *options: str) -> subprocess.CompletedProcess:
        require("curl")
        return run(["curl", "--silent", "--show-error", "--max-time", "30", "--cacert",
                    str(self.ca), "--user", f"{ALICE}:{PASSWORD}", url, *options])

    def pop3s(self, path: str) -> str:
        return f"pop3s://127.0.0.1:{self.ports['pop3s']}/{path}"

    async def test_retrieve(self):
        """
        curl's pop3s://host/n URLs (RFC 8314 implicit TLS, SASL PLAIN per
        RFC 5034) read each message exactly (RFC 1939 RETR); the messages
        stay, \\Seen after curl's QUIT.
        """
        stored = await self.in_thread(self.fill, MESSAGE, LARGE)
        self.assertGreater(len(stored[1].data), WHOLE)
        retrieved = []
        for number in range(1, len(stored) + 1):
            result = await self.in_thread(self.curl, self.pop3s(str(number)))
            self.assertEqual(result.returncode, 0, output(result))
            retrieved.append(result.stdout)
        self.assert_same_messages(retrieved, [s.data for s in stored])
        await self.in_thread(self.assert_kept, stored)

    async def test_list(self):
        """
        curl's pop3s://host/ URL lists the messages and their sizes in
        octets as stored, CRLF line ends counted (RFC 1939 LIST).
        """
        stored = await self.in_thread(self.fill, MESSAGE, LARGE)
        result = await self.in_thread(self.curl, self.pop3s(""))
        self.assertEqual(result.returncode, 0, output(result))
        self.assertEqual(result.stdout, b"".join(b"%d %d\r\n" % (n, len(s.data))
                                                 for n, s in enumerate(stored, 1)))

    async def test_stls(self):
        """
        On the plain listener, curl --ssl-reqd upgrades with STLS (RFC
        2595) and reads a message exactly; without TLS it finds no way to
        log in offered (no USER, no SASL) and gives up.
        """
        [stored] = await self.in_thread(self.fill, MESSAGE)
        url = f"pop3://127.0.0.1:{self.ports['pop3']}/1"
        result = await self.in_thread(self.curl, url, "--ssl-reqd")
        self.assertEqual(result.returncode, 0, output(result))
        self.assertEqual(result.stdout, stored.data)
        result = await self.in_thread(self.curl, url)
        # curl's exit status 67: login denied.
        self.assertEqual((result.returncode, result.stdout), (67, b""), output(result))
