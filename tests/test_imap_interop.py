"""
Interop: third-party IMAP clients against the real server (isync's
mbsync, curl, offlineimap3, installed from Debian by .ci/run).  What they
copy is compared byte for byte, and what they change is checked with
another client (imaplib).

Both Maildir clients store messages with LF line ends (and turn them back
into CRLF when they upload), and mbsync adds an X-TUID header to each
message it copies, to find the copy again; the comparisons allow for
exactly that and nothing else.
"""

from __future__ import annotations

import imaplib
import os
import re
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

from tests.clients import output, run
from tests.test_imap_server import ALICE, MESSAGE, PASSWORD, IMAPTestCase

ATTACHMENT = (
    b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.org>\r\n"
    b"Subject: The report\r\nMessage-ID: <2@example.org>\r\n"
    b"Date: Tue, 03 Feb 2026 11:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n"
    b".\r\n..two dots\r\n"
    b'--b1\r\nContent-Type: application/octet-stream; name="data.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="data.bin"\r\n\r\n'
    b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\r\n"
    b"OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ubw==\r\n"
    b"--b1--\r\n")


def note(subject: str, body: str = "A short note.") -> bytes:
    return (f"From: Bob <bob@example.org>\r\nTo: Alice <alice@example.org>\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{subject.replace(' ', '.')}@example.org>\r\n"
            f"Date: Wed, 04 Feb 2026 12:00:00 +0000\r\n\r\n{body}\r\n").encode()


#: A folder whose name needs quoting.
LISTS = "Mailing Lists"

#: What the server holds before each client runs: folder -> messages.
SERVER = {
    "INBOX": [MESSAGE, ATTACHMENT],
    LISTS: [note("list one"), note("list two", ".\r\n.leading dot")],
    "Projects.2026": [note("plan")],
}

#: The internal date of the first message of each folder (2026-02-05
#: 08:30 UTC); the next one arrived a second later, and so on.
ARRIVED = 1770280200


def quoted(name: str) -> str:
    """
    A folder name as an IMAP quoted string (imaplib sends names as given).
    """
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def maildir_files(folder: Path) -> list[Path]:
    return [p for sub in ("new", "cur") for p in sorted((folder / sub).iterdir())]


def maildir_flags(path: Path) -> str:
    return path.name.split(":2,")[1] if ":2," in path.name else ""


def set_maildir_flags(path: Path, flags: str) -> None:
    path.rename(path.parent.parent / "cur" / (path.name.split(":2,")[0] + ":2," + flags))


def unix(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n")


def without_tuid(message: bytes) -> bytes:
    """
    The message without the X-TUID header mbsync puts last in the header
    of every message it copies; nothing else may differ.
    """
    newline = b"\r\n" if b"\r\n" in message else b"\n"
    header, blank, body = message.partition(newline * 2)
    lines = header.split(newline)
    if not re.fullmatch(rb"X-TUID: [^\r\n]{12}", lines[-1]):
        raise AssertionError(f"no X-TUID at the end of {header!r}")
    return newline.join(lines[:-1]) + blank + body


class Stored(NamedTuple):
    flags: set[bytes]
    internal_date: float
    data: bytes


class InteropTestCase(IMAPTestCase):
    def setUp(self):
        super().setUp()
        self.home = Path(self.mktemp()).absolute()
        self.home.mkdir(parents=True)

    def fill(self) -> dict[str, list[int]]:
        """
        Put L{SERVER}'s messages in alice's folders, with internal dates
        from L{ARRIVED}; return their UIDs.
        """
        client = self.login()
        uids = {}
        for folder, messages in SERVER.items():
            if folder != "INBOX":
                client.create(quoted(folder))
            uids[folder] = []
            for i, message in enumerate(messages):
                _, data = client.append(quoted(folder), None, ARRIVED + i, message)
                uids[folder].append(int(re.search(rb"APPENDUID \d+ (\d+)", data[0])[1]))
        return uids

    def server_messages(self, folder: str) -> list[Stored]:
        """
        A folder's messages as another client (imaplib) sees them, in UID
        order; flags without \\Recent (which depends on the session).
        """
        client = self.login()
        client.select(quoted(folder), readonly=True)
        _, data = client.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
        return [Stored(set(re.search(rb"FLAGS \(([^)]*)\)", item[0])[1].split()) - {b"\\Recent"},
                       time.mktime(imaplib.Internaldate2tuple(item[0])), item[1])
                for item in data if isinstance(item, tuple)]

    def store(self, folder: str, changes: list[tuple[int, str]], expunge: bool = False
              ) -> None:
        """
        Add flags to messages by UID with imaplib, then maybe EXPUNGE.
        """
        client = self.login()
        client.select(quoted(folder))
        for uid, flags in changes:
            client.uid("STORE", str(uid), "+FLAGS", flags)
        if expunge:
            client.expunge()


class MbsyncTests(InteropTestCase):
    def mbsync(self, maildir: Path) -> subprocess.CompletedProcess:
        config = self.home / "mbsyncrc"
        config.write_text(
            f"IMAPAccount server\nHost localhost\nPort {self.ports['imaps']}\n"
            f"User {ALICE}\nPass {PASSWORD}\nSSLType IMAPS\nCertificateFile {self.ca}\n"
            f"Timeout 20\n\n"
            f"IMAPStore remote\nAccount server\n\n"
            f"MaildirStore local\nPath {maildir}/\nInbox {maildir}/INBOX\n"
            f"SubFolders Verbatim\n\n"
            f"Channel mail\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\n"
            f"Expunge Both\nSyncState *\nCopyArrivalDate yes\n")
        return run(["mbsync", "-V", "-c", str(config), "-a"], home=self.home)

    async def test_twoWaySync(self):
        """
        mbsync syncs several folders both ways: the server's messages and
        internal dates arrive exactly; flags set on either side, messages
        deleted on either side, a new local message and a new local folder
        reach the other side, as imaplib then sees (RFC 3501 6.3.1 CREATE,
        6.3.11 APPEND with date-time, 6.4.2 CLOSE, 6.4.5 UID FETCH, 6.4.6
        UID STORE; RFC 4315 APPENDUID).
        """
        maildir = self.home / "Mail"
        maildir.mkdir()
        local = {"INBOX": maildir / "INBOX", LISTS: maildir / LISTS,
                 "Projects.2026": maildir / "Projects" / "2026"}
        uids = await self.in_thread(self.fill)
        result = await self.in_thread(self.mbsync, maildir)
        self.assertEqual(result.returncode, 0, output(result))
        for folder, messages in SERVER.items():
            files = sorted((without_tuid(p.read_bytes()), p.stat().st_mtime)
                           for p in maildir_files(local[folder]))
            self.assertEqual(files, sorted((unix(m), ARRIVED + i)
                                           for i, m in enumerate(messages)), folder)

        # Locally: flag one message, trash the other, write a message in a
        # folder and another in a new folder.
        [first, second] = sorted(maildir_files(local["INBOX"]),
                                 key=lambda p: without_tuid(p.read_bytes()) != unix(MESSAGE))
        set_maildir_flags(first, "FS")
        set_maildir_flags(second, "T")
        written = note("written offline", "Made locally.\r\n.with a dot")
        path = local["Projects.2026"] / "new" / "1770000000.1_1.client"
        path.write_bytes(unix(written))
        os.utime(path, (ARRIVED + 3600, ARRIVED + 3600))
        tickets = maildir / "Travel" / "Tickets"
        for sub in ("cur", "new", "tmp"):
            (tickets / sub).mkdir(parents=True)
        (tickets / "cur" / "1770000001.1_2.client:2,S").write_bytes(unix(note("ticket")))
        # On the server: answer one message, expunge the other.
        await self.in_thread(self.store, LISTS, [(uids[LISTS][0], "(\\Answered)"),
                                                 (uids[LISTS][1], "(\\Deleted)")], True)

        result = await self.in_thread(self.mbsync, maildir)
        self.assertEqual(result.returncode, 0, output(result))
        inbox = await self.in_thread(self.server_messages, "INBOX")
        self.assertEqual(inbox, [Stored({b"\\Seen", b"\\Flagged"}, ARRIVED, MESSAGE)])
        [plan, new] = await self.in_thread(self.server_messages, "Projects.2026")
        self.assertEqual(plan, Stored(set(), ARRIVED, SERVER["Projects.2026"][0]))
        self.assertEqual(new._replace(data=without_tuid(new.data)),
                         Stored(set(), ARRIVED + 3600, written))
        [ticket] = await self.in_thread(self.server_messages, "Travel.Tickets")
        self.assertEqual((ticket.flags, without_tuid(ticket.data)),
                         ({b"\\Seen"}, note("ticket")))
        self.assertEqual([(without_tuid(p.read_bytes()), maildir_flags(p))
                          for p in maildir_files(local["INBOX"])],
                         [(unix(MESSAGE), "FS")])
        self.assertEqual([(without_tuid(p.read_bytes()), maildir_flags(p))
                          for p in maildir_files(local[LISTS])],
                         [(unix(SERVER[LISTS][0]), "R")])


class CurlTests(InteropTestCase):
    def curl(self, path: str, *args: str) -> subprocess.CompletedProcess:
        return run(["curl", "--silent", "--show-error", "--max-time", "30", "--cacert",
                    str(self.ca), "--user", f"{ALICE}:{PASSWORD}",
                    f"imaps://localhost:{self.ports['imaps']}/{path}", *args])

    async def test_list(self):
        """
        curl lists the folders (RFC 3501 6.3.8 LIST, with RFC 6154
        special-use and RFC 3348 child attributes) after logging in over
        implicit TLS (RFC 8314) with the certificate checked by name.
        """
        await self.in_thread(self.fill)
        result = await self.in_thread(self.curl, "")
        self.assertEqual(result.returncode, 0, output(result))
        self.assertEqual(result.stdout, (
            b'* LIST (\\HasNoChildren) "." INBOX\r\n'
            b'* LIST (\\HasNoChildren \\Archive) "." Archive\r\n'
            b'* LIST (\\HasNoChildren \\Drafts) "." Drafts\r\n'
            b'* LIST (\\HasNoChildren \\Junk) "." Junk\r\n'
            b'* LIST (\\HasNoChildren) "." "Mailing Lists"\r\n'
            b'* LIST (\\HasChildren) "." Projects\r\n'
            b'* LIST (\\HasNoChildren) "." Projects.2026\r\n'
            b'* LIST (\\HasNoChildren \\Sent) "." Sent\r\n'
            b'* LIST (\\HasNoChildren \\Trash) "." Trash\r\n'))

    async def test_fetchByUID(self):
        """
        curl's INBOX;UID=n URLs (RFC 5092) read each message back exactly as
        it was appended (RFC 3501 6.4.8 UID FETCH BODY[]).
        """
        uids = await self.in_thread(self.fill)
        for folder in ("INBOX", LISTS):
            for uid, message in zip(uids[folder], SERVER[folder], strict=True):
                result = await self.in_thread(
                    self.curl, f"{folder.replace(' ', '%20')};UID={uid}")
                self.assertEqual(result.returncode, 0, output(result))
                self.assertEqual(result.stdout, message)

    async def test_fetchSections(self):
        """
        curl's SECTION and PARTIAL URLs read MIME parts, header fields and
        byte ranges exactly (RFC 3501 6.4.5 BODY[section]<partial>).
        """
        uids = await self.in_thread(self.fill)
        uid = uids["INBOX"][1]
        text, attachment = ATTACHMENT.split(b"\r\n\r\n")[2:4]
        expected = {
            "SECTION=1": text.split(b"\r\n--b1")[0],
            "SECTION=1.MIME": b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
            "SECTION=2": attachment.split(b"\r\n--b1--")[0],
            "SECTION=2;PARTIAL=4.8": b"AwQFBgcI",
            "SECTION=HEADER.FIELDS%20(SUBJECT%20DATE)":
                b"Subject: The report\r\nDate: Tue, 03 Feb 2026 11:00:00 +0000\r\n\r\n",
            "SECTION=TEXT": ATTACHMENT.split(b"\r\n\r\n", 1)[1],
            "PARTIAL=0.20": ATTACHMENT[:20],
        }
        for section, data in expected.items():
            result = await self.in_thread(self.curl, f"INBOX;UID={uid};{section}")
            self.assertEqual(result.returncode, 0, output(result))
            self.assertEqual(result.stdout, data, section)

    async def test_search(self):
        """
        curl's ?query URL runs SEARCH (RFC 3501 6.4.4) in the folder.
        """
        await self.in_thread(self.fill)
        result = await self.in_thread(self.curl, "INBOX?SUBJECT%20report")
        self.assertEqual(result.returncode, 0, output(result))
        self.assertEqual(result.stdout, b"* SEARCH 2\r\n")

    async def test_append(self):
        """
        curl --upload-file APPENDs a message with \\Seen (RFC 3501 6.3.11)
        that imaplib then reads back byte for byte.
        """
        path = self.home / "upload.eml"
        path.write_bytes(ATTACHMENT)
        result = await self.in_thread(self.curl, "INBOX", "--upload-file", str(path))
        self.assertEqual(result.returncode, 0, output(result))
        [stored] = await self.in_thread(self.server_messages, "INBOX")
        self.assertEqual((stored.flags, stored.data), ({b"\\Seen"}, ATTACHMENT))


class OfflineimapTests(InteropTestCase):
    def offlineimap(self, maildir: Path) -> subprocess.CompletedProcess:
        config = self.home / "offlineimaprc"
        config.write_text(
            f"[general]\naccounts = test\nmetadata = {self.home / 'metadata'}\n\n"
            f"[Account test]\nlocalrepository = local\nremoterepository = remote\n\n"
            f"[Repository local]\ntype = Maildir\nlocalfolders = {maildir}\n\n"
            f"[Repository remote]\ntype = IMAP\nremotehost = localhost\n"
            f"remoteport = {self.ports['imaps']}\nssl = yes\nsslcacertfile = {self.ca}\n"
            f"remoteuser = {ALICE}\nremotepass = {PASSWORD}\n")
        return run(["offlineimap", "-c", str(config), "-o", "-u", "basic"], home=self.home)

    def local(self, folder: Path) -> dict[bytes, str]:
        """
        A Maildir folder's messages (LF line ends) and their flags.
        """
        return {p.read_bytes(): maildir_flags(p) for p in maildir_files(folder)}

    async def test_retrieve(self):
        """
        offlineimap copies every folder to a local Maildir, each message
        exactly and with its flags (RFC 3501 6.4.5 FETCH FLAGS, UID FETCH
        BODY.PEEK[]); a second run picks up a new message and an EXPUNGE.
        """
        maildir = self.home / "Mail"
        uids = await self.in_thread(self.fill)
        await self.in_thread(self.store, "INBOX", [(uids["INBOX"][1], "(\\Flagged)")])
        await self.in_thread(self.store, LISTS, [(uids[LISTS][0], "(\\Seen \\Answered)")])
        result = await self.in_thread(self.offlineimap, maildir)
        self.assertEqual(result.returncode, 0, output(result))
        self.assertEqual(self.local(maildir / "INBOX"),
                         {unix(MESSAGE): "", unix(ATTACHMENT): "F"})
        self.assertEqual(self.local(maildir / LISTS),
                         {unix(SERVER[LISTS][0]): "RS", unix(SERVER[LISTS][1]): ""})
        self.assertEqual(self.local(maildir / "Projects.2026"),
                         {unix(SERVER["Projects.2026"][0]): ""})

        def append_later():
            self.login().append("INBOX", "(\\Seen)", None, note("later"))

        await self.in_thread(append_later)
        await self.in_thread(self.store, LISTS, [(uids[LISTS][1], "(\\Deleted)")], True)
        result = await self.in_thread(self.offlineimap, maildir)
        self.assertEqual(result.returncode, 0, output(result))
        self.assertEqual(self.local(maildir / "INBOX"),
                         {unix(MESSAGE): "", unix(ATTACHMENT): "F", unix(note("later")): "S"})
        self.assertEqual(self.local(maildir / LISTS), {unix(SERVER[LISTS][0]): "RS"})
