"""
Migration both ways between mailsrv's store and Debian's Dovecot, on the
same Maildir: what one writes, the other serves with the same folders,
UIDVALIDITY, UIDs, flags, keywords, sizes and bytes.  Dovecot is read over
IMAP; until mailsrv speaks IMAP, its side is read from the store directly.
"""

import imaplib
import re
import time
from pathlib import Path

import twisted.mail.imap4  # noqa: F401 - registers the imap4-utf-7 codec
from twisted.trial.unittest import TestCase

from mailsrv.store.maildir import MaildirStore
from mailsrv.store.testing import run_now
from tests.dovecot import SKIP_REASON, DovecotServer

ALICE = "alice@example.org"
PASSWORD = "migrate-me"


def message(n: int) -> bytes:
    return (b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: message %d\r\n"
            b"\r\nBody of message %d.\r\n.\r\nA line with a dot.\r\n" % (n, n))


def crlf(data: bytes) -> bytes:
    """
    A stored message as IMAP serves it: Dovecot stores LF line ends and
    sends CRLF (RFC 3501 4.3 wants CRLF on the wire).
    """
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def quoted(name: str) -> str:
    return '"' + name.encode("imap4-utf-7").decode("ascii") + '"'


def imap_view(client: imaplib.IMAP4) -> dict:
    """
    Everything a client sees of a user through Dovecot: per selectable
    folder, UIDVALIDITY and {uid: (flags, size, internal date, bytes)}; and
    subscriptions.
    """
    typ, listing = client.list()
    assert typ == "OK", listing
    view = {}
    for line in listing:
        attributes, name = re.fullmatch(rb'\(([^)]*)\) "\." (.+)', line).groups()
        name = name.strip(b'"').decode("imap4-utf-7")
        if b"\\Noselect" in attributes or b"\\NonExistent" in attributes:
            continue
        typ, _ = client.select(quoted(name), readonly=True)
        assert typ == "OK", name
        [uidvalidity] = client.response("UIDVALIDITY")[1]
        messages = {}
        typ, data = client.uid("FETCH", "1:*",
                               "(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[])")
        for item in data:
            if not isinstance(item, tuple):
                continue
            head, body = item
            uid = int(re.search(rb"UID (\d+)", head).group(1))
            flags = re.search(rb"FLAGS \(([^)]*)\)", head).group(1).decode().split()
            size = int(re.search(rb"RFC822\.SIZE (\d+)", head).group(1))
            date = int(time.mktime(imaplib.Internaldate2tuple(head)))
            messages[uid] = (frozenset(f for f in flags if f != "\\Recent"), size, date, body)
        view[name] = (int(uidvalidity), messages)
    typ, subscribed = client.lsub()
    names = sorted(re.fullmatch(rb'\([^)]*\) "\." (.+)', line).group(1).strip(b'"')
                   .decode("imap4-utf-7") for line in subscribed if line)
    return {"folders": view, "subscribed": names}


def store_view(store: MaildirStore, address: str) -> dict:
    """
    The same view, read from mailsrv's store.
    """
    user = store.user(address)
    view = {}
    for info in run(user.list_folders()):
        if not info.selectable:
            continue
        snapshot = run(user.snapshot(info.name))
        messages = {}
        for message_info in snapshot.messages:
            with run(user.open_message(info.name, message_info.uid)) as f:
                body = crlf(f.read())
            messages[message_info.uid] = (message_info.flags, message_info.size,
                                          int(message_info.internal_date), body)
        view[info.name] = (snapshot.uidvalidity, messages)
    return {"folders": view, "subscribed": sorted(run(user.subscriptions()))}


def dovecot_private_files(root: Path) -> dict[str, bytes]:
    """
    Dovecot's own index files (dovecot.index*, dovecot.list.index*,
    dovecot.mailbox.log) and their contents.
    """
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("dovecot.*"))}


def run(d):
    results = []
    d.addBoth(results.append)
    [result] = results
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


class MigrationTests(TestCase):
    skip = SKIP_REASON

    def setUp(self):
        self.mail_root = Path(self.mktemp()).absolute()

    def open_store(self) -> MaildirStore:
        store = MaildirStore(self.mail_root, run_now)
        self.addCleanup(store.close)
        return store

    def test_mailsrvToDovecot(self):
        """
        A Maildir written by mailsrv (folders with non-ASCII and nested
        names, flags, keywords, expunged gaps, copies and moves) is served
        by Dovecot with the same UIDVALIDITY, UIDs, flags, keywords, sizes
        and bytes; and after Dovecot has served it, mailsrv still agrees.
        """
        store = self.open_store()
        user = store.user(ALICE)
        run(user.create_folder("Café.Reçus"))
        run(user.create_folder("Projects.2024"))
        run(user.subscribe("Café.Reçus"))
        for n in range(1, 7):
            run(store.deliver(ALICE, message(n)))
        run(user.append("INBOX", message(7), ["\\Seen", "$Forwarded", "Work"], 1_500_000_000))
        run(user.set_flags("INBOX", [2, 4], ["\\Deleted"], "add"))
        run(user.set_flags("INBOX", [5], ["\\Flagged", "\\Answered", "Home"], "set"))
        run(user.expunge("INBOX"))
        run(user.copy("INBOX", [1, 5, 7], "Café.Reçus"))
        run(user.move("INBOX", [3], "Projects.2024"))
        run(user.append("Sent", message(8), ["\\Seen", "\\Draft"]))
        written = store_view(store, ALICE)
        self.assertEqual(sorted(written["folders"]["INBOX"][1]), [1, 5, 6, 7])

        dovecot = DovecotServer.start(self, self.mail_root, {ALICE: PASSWORD})
        served = imap_view(dovecot.imap(ALICE, PASSWORD))
        self.assertEqual(served, written)
        store.close()
        self.assertEqual(store_view(self.open_store(), ALICE), written)

    def test_dovecotToMailsrv(self):
        """
        A Maildir written by Dovecot (APPEND with flags, keywords and dates,
        CREATE, STORE, EXPUNGE, COPY, SUBSCRIBE) is read by mailsrv with the
        same UIDVALIDITY, UIDs, flags, keywords, sizes and bytes; and new
        mail mailsrv adds continues the same UIDs, which Dovecot then serves.
        """
        dovecot = DovecotServer.start(self, self.mail_root, {ALICE: PASSWORD})
        client = dovecot.imap(ALICE, PASSWORD)
        for name in ("Archive", "Café.Reçus", "Lists.Python"):
            self.assertEqual(client.create(quoted(name))[0], "OK")
        self.assertEqual(client.subscribe(quoted("Lists.Python"))[0], "OK")
        for n in range(1, 6):
            flags = "(\\Seen $Label1)" if n % 2 else None
            self.assertEqual(client.append("INBOX", flags, imaplib.Time2Internaldate(
                1_600_000_000 + n), message(n))[0], "OK")
        client.append(quoted("Café.Reçus"), "(\\Flagged Projet)", None, message(9))
        client.select("INBOX")
        client.uid("STORE", "2", "+FLAGS", "(\\Deleted \\Answered)")
        client.uid("STORE", "4", "+FLAGS", "(\\Draft Later)")
        client.expunge()
        client.uid("COPY", "1,3", quoted("Archive"))
        served = imap_view(client)
        self.assertEqual(sorted(served["folders"]["INBOX"][1]), [1, 3, 4, 5])
        dovecot.stop()

        dovecot_files = dovecot_private_files(self.mail_root)
        self.assertTrue(dovecot_files)
        store = self.open_store()
        self.assertEqual(store_view(store, ALICE), served)

        user = store.user(ALICE)
        run(store.deliver(ALICE, message(10)))
        status = run(user.status("INBOX"))
        self.assertEqual((status.uidvalidity, status.uidnext), (served["folders"]["INBOX"][0], 7))
        run(user.set_flags("INBOX", [1], ["\\Seen", "$Label1", "Replied"], "set"))
        after = store_view(store, ALICE)
        store.close()
        self.assertEqual(dovecot_private_files(self.mail_root), dovecot_files,
                         "mailsrv touched Dovecot's index files")
        dovecot = DovecotServer.start(self, self.mail_root, {ALICE: PASSWORD})
        self.assertEqual(imap_view(dovecot.imap(ALICE, PASSWORD)), after)
