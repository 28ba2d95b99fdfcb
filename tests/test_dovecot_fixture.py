"""
Tests for L{tests.dovecot}: the private Dovecot runs, serves the mailsrv
Maildir++ layout, and its on-disk formats are the ones the store expects
(dovecot-uidlist, dovecot-keywords, file names) — in both directions: what
Dovecot writes, and what Dovecot serves from a tree written by hand.
"""

import os
import re
import socket
from pathlib import Path

import twisted.mail.imap4  # noqa: F401 - registers the imap4-utf-7 codec
from twisted.trial.unittest import TestCase

from tests.dovecot import SKIP_REASON, DovecotServer

ALICE = "alice@example.org"
UIDLIST_HEADER = re.compile(r"3 V(\d+) N(\d+) G([0-9a-f]{32})")
MESSAGE = b"From: bob@example.org\r\nSubject: %d\r\n\r\nBody %d.\r\n"


def fetch(client, items: str = "(FLAGS)") -> dict[int, bytes]:
    """
    UID -> the FETCH response (with its literals) for every message of the
    selected folder.
    """
    typ, data = client.uid("FETCH", "1:*", items)
    assert typ == "OK", data
    result = {}
    for item in data:
        text = b"".join(item) if isinstance(item, tuple) else item
        if text is None or text == b")":
            continue
        result[int(re.search(rb"UID (\d+)", text).group(1))] = text
    return result


def flags(client, recent: bool = False) -> dict[int, set[str]]:
    """
    UID -> the set of flags and keywords of each message of the selected
    folder; without \\Recent unless C{recent}.
    """
    result = {}
    for uid, text in fetch(client).items():
        found = set(re.search(rb"FLAGS \(([^)]*)\)", text).group(1).decode().split())
        result[uid] = found if recent else found - {"\\Recent"}
    return result


def live_members(group: int) -> list[int]:
    """
    The processes of process group C{group} that still run (not zombies,
    which the machine's init reaps in its own time).
    """
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            members.append(int(stat.parent.name))
    return members


def select(client, folder: str = "INBOX", readonly: bool = False) -> tuple[int, int]:
    """
    Select C{folder}; return its UIDVALIDITY and UIDNEXT.
    """
    typ, data = client.select(folder.encode("imap4-utf-7").decode("ascii"), readonly)
    assert typ == "OK", data
    return (int(client.response("UIDVALIDITY")[1][0]), int(client.response("UIDNEXT")[1][0]))


def read_keywords(maildir: Path) -> dict[str, str]:
    """
    dovecot-keywords as letter -> keyword ("0 $Forwarded" is letter a).
    """
    result = {}
    for line in (maildir / "dovecot-keywords").read_text("utf-8").splitlines():
        index, name = line.split(" ", 1)
        result[chr(ord("a") + int(index))] = name
    return result


def letters_of(filename: str) -> str:
    """
    The flag letters after ":2," in a maildir file name.
    """
    _base, separator, info = filename.partition(":2,")
    assert separator, filename
    return info


class DovecotWritesTests(TestCase):
    """
    What Dovecot writes into an empty mail root, checked over IMAP and on disk.
    """

    skip = SKIP_REASON

    def test_appendKeywordsAndNonAsciiFolder(self):
        mail_root = Path(self.mktemp())
        server = DovecotServer.start(self, mail_root, {ALICE: "secret"})
        client = server.imap(ALICE)

        appended = [client.append("INBOX", r"(\Seen)", None, MESSAGE % (n, n)) for n in (1, 2, 3)]
        self.assertEqual([typ for typ, _ in appended], ["OK"] * 3)
        appenduids = [re.search(rb"APPENDUID (\d+) (\d+)", data[0]).groups()
                      for _, data in appended]
        uidvalidity, next_uid = select(client)
        self.assertEqual(appenduids, [(str(uidvalidity).encode(), b"%d" % n) for n in (1, 2, 3)])
        self.assertEqual(next_uid, 4)
        # Appended messages are \Recent in the first session that selects.
        self.assertEqual(client.response("RECENT")[1], [b"3"])
        typ, _ = client.uid("STORE", "2:3", "+FLAGS", "($Forwarded Work)")
        self.assertEqual(typ, "OK")
        typ, _ = client.uid("STORE", "3", "+FLAGS", r"(\Flagged \Answered)")
        self.assertEqual(typ, "OK")
        self.assertEqual(flags(client), {
            1: {r"\Seen"},
            2: {r"\Seen", "$Forwarded", "Work"},
            3: {r"\Seen", r"\Flagged", r"\Answered", "$Forwarded", "Work"},
        })

        folder = "Café.Reçus"
        self.assertEqual(client.create(folder.encode("imap4-utf-7").decode())[0], "OK")
        typ, data = client.append(folder.encode("imap4-utf-7").decode(), r"(\Draft)", None,
                                  MESSAGE % (4, 4))
        self.assertEqual(typ, "OK", data)
        typ, listing = client.list()
        self.assertIn(b'(\\HasNoChildren) "." Caf&AOk-.Re&AOc-us', listing)
        self.assertIn(b'(\\Noselect \\HasChildren) "." Caf&AOk-', listing)
        folder_uidvalidity, _ = select(client, folder, readonly=True)
        self.assertNotEqual(folder_uidvalidity, uidvalidity)
        self.assertEqual(flags(client), {1: {r"\Draft"}})
        client.logout()

        # On disk: the mailsrv layout, files owned by the test's own uid.
        home = mail_root / "example.org" / "alice"
        self.assertEqual(server.home(ALICE), home.absolute())
        self.assertEqual(sorted(p.name for p in (home / "new").iterdir()), [])
        names = sorted(p.name for p in (home / "cur").iterdir())
        self.assertEqual(len(names), 3)
        for name in names:
            self.assertRegex(name, r"^\d+\.M\d+P\d+\.[^,:/]+,S=\d+,W=\d+:2,[A-Za-z]*$")
            stat = (home / "cur" / name).stat()
            self.assertEqual((stat.st_uid, stat.st_gid), (os.getuid(), os.getgid()))
            # S= is the size on disk (LF line ends), W= the size with CRLF.
            size = int(re.search(r",S=(\d+)", name).group(1))
            vsize = int(re.search(r",W=(\d+)", name).group(1))
            content = (home / "cur" / name).read_bytes()
            self.assertEqual(size, len(content))
            self.assertNotIn(b"\r\n", content)
            self.assertEqual(vsize, len(content.replace(b"\n", b"\r\n")))

        uidlist = (home / "dovecot-uidlist").read_text("ascii").splitlines()
        header = UIDLIST_HEADER.fullmatch(uidlist[0])
        self.assertIsNotNone(header, uidlist[0])
        self.assertEqual(int(header.group(1)), uidvalidity)
        # The header's N is written when the file is rewritten, not on each
        # append: the real next UID is max(N, last UID + 1).
        self.assertLessEqual(int(header.group(2)), 4)
        by_uid = {}
        for line in uidlist[1:]:
            uid, base = re.fullmatch(r"(\d+) :(\S+)", line).groups()
            by_uid[int(uid)] = base
        self.assertEqual(sorted(by_uid), [1, 2, 3])
        by_base = {name.partition(":2,")[0]: name for name in names}
        self.assertEqual(set(by_base), set(by_uid.values()))

        keywords = read_keywords(home)
        self.assertEqual(set(keywords.values()), {"$Forwarded", "Work"})
        letter = {name: letter for letter, name in keywords.items()}
        kw = "".join(sorted(letter[k] for k in ("$Forwarded", "Work")))
        self.assertEqual(letters_of(by_base[by_uid[1]]), "S")
        self.assertEqual(letters_of(by_base[by_uid[2]]), "S" + kw)
        # System flags in ASCII order (D F P R S T), then keyword letters.
        self.assertEqual(letters_of(by_base[by_uid[3]]), "FRS" + kw)

        folder_dir = home / ".Caf&AOk-.Re&AOc-us"
        self.assertTrue((folder_dir / "maildirfolder").is_file())
        self.assertFalse((home / ".Caf&AOk-").exists())
        folder_header = (folder_dir / "dovecot-uidlist").read_text("ascii").splitlines()[0]
        self.assertEqual(int(UIDLIST_HEADER.fullmatch(folder_header).group(1)),
                         folder_uidvalidity)
        [folder_file] = (folder_dir / "cur").iterdir()
        self.assertEqual(letters_of(folder_file.name), "D")


class DovecotServesTests(TestCase):
    """
    A Maildir++ tree written by hand (as a migration would find or write it)
    is served by Dovecot with exactly its UIDs, UIDVALIDITY, flags and keywords.
    """

    skip = SKIP_REASON

    def test_handWrittenMaildir(self):
        mail_root = Path(self.mktemp())
        home = mail_root / "example.org" / "alice"
        for sub in ("cur", "new", "tmp"):
            (home / sub).mkdir(parents=True)
        seven, forty_two = MESSAGE.replace(b"\r\n", b"\n") % (7, 7), b"Subject: 42\n\n42\n"
        (home / "cur" / f"1700000000.M1P1.old,S={len(seven)}:2,Sa").write_bytes(seven)
        # No S= or W=: Dovecot computes sizes; P (passed) is kept but not an IMAP flag.
        (home / "cur" / "1700000001.M2P1.old:2,FPRb").write_bytes(forty_two)
        # Not in the uidlist: gets the next UID (N), and \Recent.
        new = b"Subject: new\n\nnew\n"
        (home / "new" / "1700000002.M3P1.old").write_bytes(new)
        (home / "dovecot-uidlist").write_text(
            "3 V1234567890 N43 G2f6b3a1c0d9e8f7a6b5c4d3e2f1a0b9c\n"
            f"7 :1700000000.M1P1.old,S={len(seven)}\n"
            "42 :1700000001.M2P1.old\n")
        (home / "dovecot-keywords").write_text("0 $Forwarded\n1 Work\n")

        server = DovecotServer.start(self, mail_root, {ALICE: "secret"})
        client = server.imap(ALICE)
        self.assertEqual(select(client, readonly=True), (1234567890, 44))
        self.assertEqual(client.response("RECENT")[1], [b"1"])
        self.assertEqual(flags(client, recent=True), {
            7: {r"\Seen", "$Forwarded"},
            42: {r"\Flagged", r"\Answered", "Work"},
            43: {r"\Recent"},
        })
        # RFC822.SIZE counts CRLF line ends; the files have LF.
        sizes = {uid: int(re.search(rb"RFC822\.SIZE (\d+)", text).group(1))
                 for uid, text in fetch(client, "(RFC822.SIZE)").items()}
        self.assertEqual(sizes, {uid: len(body) + body.count(b"\n")
                                 for uid, body in ((7, seven), (42, forty_two), (43, new))})
        typ, data = client.uid("FETCH", "42", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertEqual(data[0][1], b"Subject: 42\r\n\r\n")

        # Setting a flag renames the file, keeps unknown letters, keeps the UID.
        select(client)
        typ, _ = client.uid("STORE", "42", "+FLAGS", r"(\Seen)")
        self.assertEqual(typ, "OK")
        client.logout()
        self.assertEqual(sorted(p.name for p in (home / "cur").iterdir()), [
            f"1700000000.M1P1.old,S={len(seven)}:2,Sa",
            "1700000001.M2P1.old:2,FPRSb",
            "1700000002.M3P1.old:2,",
        ])
        self.assertEqual(sorted(p.name for p in (home / "new").iterdir()), [])
        uidlist = (home / "dovecot-uidlist").read_text("ascii").splitlines()
        header = UIDLIST_HEADER.fullmatch(uidlist[0])
        self.assertEqual((header.group(1), header.group(3)),
                         ("1234567890", "2f6b3a1c0d9e8f7a6b5c4d3e2f1a0b9c"))
        self.assertEqual(uidlist[1:], [f"7 :1700000000.M1P1.old,S={len(seven)}",
                                       "42 :1700000001.M2P1.old",
                                       "43 :1700000002.M3P1.old"])

    def test_missingUidlist(self):
        """
        Without a dovecot-uidlist, Dovecot gives the folder a new
        UIDVALIDITY and numbers its messages from 1 in the order of the
        time (then microseconds) in their file names.
        """
        mail_root = Path(self.mktemp())
        home = mail_root / "example.org" / "alice"
        for sub in ("cur", "new", "tmp"):
            (home / sub).mkdir(parents=True)
        for name in ("1700000005.M5P1.h:2,S", "1700000001.M10P1.h:2,F", "1700000001.M9P1.h:2,",
                     "1600000000.M1P1.h:2,"):
            (home / "cur" / name).write_bytes(b"Subject: %s\n\nx\n" % name.encode())
        server = DovecotServer.start(self, mail_root, {ALICE: "secret"})
        client = server.imap(ALICE)
        uidvalidity, next_uid = select(client, readonly=True)
        self.assertEqual(next_uid, 5)
        self.assertGreater(uidvalidity, 0)
        subjects = {uid: re.search(rb"Subject: (\S+)", text).group(1).decode()
                    for uid, text in fetch(client, "(BODY.PEEK[HEADER])").items()}
        self.assertEqual(subjects, {1: "1600000000.M1P1.h:2,", 2: "1700000001.M9P1.h:2,",
                                    3: "1700000001.M10P1.h:2,F", 4: "1700000005.M5P1.h:2,S"})
        client.logout()
        header = (home / "dovecot-uidlist").read_text("ascii").splitlines()[0]
        self.assertEqual(int(UIDLIST_HEADER.fullmatch(header).group(1)), uidvalidity)
        # The last UIDVALIDITY handed out under this root, 8 hex digits.
        self.assertEqual((home / "dovecot-uidvalidity").read_text("ascii"), f"{uidvalidity:08x}")


class FixtureTests(TestCase):
    """
    The fixture itself: authentication, isolation, teardown.
    """

    skip = SKIP_REASON

    def test_wrongPasswordRefused(self):
        server = DovecotServer.start(self, Path(self.mktemp()), {ALICE: "secret"})
        with self.assertRaises(Exception) as caught:
            server.imap(ALICE, "wrong")
        self.assertIn("AUTHENTICATIONFAILED", str(caught.exception))
        # A password with ":" survives the passwd-file.
        server = DovecotServer.start(self, Path(self.mktemp()), {ALICE: "a:b c"})
        self.assertEqual(server.imap(ALICE).noop()[0], "OK")

    def test_parallelInstances(self):
        """
        Two instances run at once, each on its own port and mail root.
        """
        first = DovecotServer.start(self, Path(self.mktemp()), {ALICE: "one"})
        second = DovecotServer.start(self, Path(self.mktemp()), {ALICE: "two"})
        self.assertNotEqual(first.imap_port, second.imap_port)
        first.imap(ALICE).append("INBOX", None, None, MESSAGE % (1, 1))
        client = second.imap(ALICE)
        self.assertEqual(client.select("INBOX")[1], [b"0"])
        self.assertTrue((first.home(ALICE) / "dovecot-uidlist").exists())

    def test_stopEndsEveryProcess(self):
        server = DovecotServer.start(self, Path(self.mktemp()), {ALICE: "secret"})
        server.imap(ALICE).select("INBOX")
        group = server.process.pid
        self.assertEqual(os.getpgid(group), group)
        self.assertGreater(len(live_members(group)), 3)
        server.stop()
        self.assertEqual(live_members(group), [])
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.imap_port), timeout=5).close()
        self.assertIn("starting up", server.log())
        server.stop()  # a second stop (the cleanup) does nothing
