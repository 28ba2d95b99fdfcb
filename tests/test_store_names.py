"""
Tests for L{mailsrv.store.names}: folder names checked, normalized and
mapped to Maildir++ directories in modified UTF-7 (RFC 3501 sections 5.1
and 5.1.3), never outside the user's store.
"""

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mailsrv.store import names
from mailsrv.store.names import (
    MAX_DEPTH,
    MAX_DIRECTORY_NAME_BYTES,
    InvalidFolderName,
    folder_directory,
    folder_name_from_directory,
    is_inside,
    normalize_folder_name,
    parent_names,
)

ROOT = Path("/srv/mail/example.org/alice")

#: "mi-khaham" (I want), with the zero-width non-joiner Persian spelling needs.
PERSIAN = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"

#: Names that must be refused, each for the reason beside it.
HOSTILE = [
    ("..", "empty levels; the parent directory"),
    ("../x", "path traversal"),
    ("a/../../etc", "path traversal"),
    ("/etc/passwd", "absolute path"),
    ("a/b", "slash"),
    ("a\\b", "backslash"),
    ("\x00", "NUL"),
    ("a\x00b", "NUL inside"),
    ("a\nb", "LF: response injection"),
    ("a\rb", "CR"),
    ("a\r\n* BYE", "CRLF: response injection"),
    ("\x1b[31mred", "ESC: terminal escapes in logs"),
    ("a\tb", "tab"),
    ("\x7f", "DEL"),
    ("\u0085", "C1 next line"),
    ("\x9b", "C1 CSI"),
    ("", "empty"),
    (".", "empty levels"),
    ("a..b", "empty level"),
    (".a", "empty first level"),
    ("a.", "empty last level"),
    ("INBOX.", "empty last level after INBOX"),
    ("%", "LIST wildcard (RFC 3501 5.1)"),
    ("a*", "LIST wildcard (RFC 3501 5.1)"),
    ("a.%.b", "LIST wildcard in a level"),
    (" a", "leading space"),
    ("a ", "trailing space"),
    ("a. b", "leading space in a level"),
    ("a .b", "trailing space in a level"),
    ("x" * 300, "too many characters"),
    ("x" * (MAX_DIRECTORY_NAME_BYTES), "directory name one byte over NAME_MAX"),
    (".".join(["a"] * 40), "too many levels"),
    ("\ud800", "lone surrogate"),
    ("a\udc00b", "lone low surrogate"),
    ("\udcff", "undecodable file-name byte (surrogateescape)"),
    ("é" * 200, "short enough in characters, over 255 bytes encoded"),
    ("Work." + "日" * 100, "a deeper level over 255 bytes encoded"),
    ("a\u2028b", "line separator (RFC 6855 3)"),
    ("a\u2029b", "paragraph separator (RFC 6855 3)"),
    ("\u202egpj.exe", "right-to-left override"),
    ("a\u2066b", "left-to-right isolate"),
    ("a\u200eb", "left-to-right mark"),
    ("a\u200bb", "zero-width space"),
    ("\ufeffa", "byte-order mark"),
    ("a\u00adb", "soft hyphen"),
    ("a\u00a0b", "no-break space"),
    ("a\u3000b", "ideographic space"),
    ("\u200d", "a level that is only a joiner"),
    ("\u200ca", "a level starting with a joiner"),
    ("a.b\u200d", "a level ending with a joiner"),
    ("\ue000", "private use"),
    ("\u0378", "unassigned"),
    ("~", "tilde first"),
    ("~alice", "home directory of another user on old servers"),
    ("~.x", "tilde first"),
]

#: Names that must be accepted, with their canonical form.
ACCEPTED = [
    ("INBOX", "INBOX"),
    ("inbox", "INBOX"),
    ("InBoX", "INBOX"),
    ("inbox.Sub", "INBOX.Sub"),
    ("iNbOx.a.b", "INBOX.a.b"),
    ("A.inbox", "A.inbox"),
    ("Inbox2", "Inbox2"),
    ("\u0131nbox", "\u0131nbox"),
    ("Sent", "Sent"),
    ("Archive.2024", "Archive.2024"),
    ("Café.Reçus", "Café.Reçus"),
    ("Cafe\u0301.Rec\u0327us", "Café.Reçus"),
    ("A&B", "A&B"),
    ("&", "&"),
    ("日本語", "日本語"),
    ("台北.日本語", "台北.日本語"),
    ("My Folder", "My Folder"),
    ("a  b", "a  b"),
    ("#news.comp", "#news.comp"),
    ("Old.~backup", "Old.~backup"),
    ("a~", "a~"),
    ("-&-+,", "-&-+,"),
    ('Quote"d', 'Quote"d'),
    ("Привет", "Привет"),
    ("\U0001f600 Fun", "\U0001f600 Fun"),
    ("\U0001f468\u200d\U0001f4bb", "\U0001f468\u200d\U0001f4bb"),
    (PERSIAN, PERSIAN),
    ("x" * (MAX_DIRECTORY_NAME_BYTES - 1), "x" * (MAX_DIRECTORY_NAME_BYTES - 1)),
    (".".join(["a"] * MAX_DEPTH), ".".join(["a"] * MAX_DEPTH)),
]


def _refusal(name):
    """
    The reason a name is refused, or None if it is accepted.
    """
    try:
        normalize_folder_name(name)
    except InvalidFolderName as e:
        return str(e)
    return None


class NormalizeTests(SynchronousTestCase):
    def test_hostileNamesRefused(self):
        """
        Every hostile name is refused, by the check and by folder_directory.
        """
        self.assertGreaterEqual(len(HOSTILE), 25)
        accepted = [(name, why) for name, why in HOSTILE if _refusal(name) is None]
        self.assertEqual(accepted, [])
        for name, _ in HOSTILE:
            self.assertRaises(InvalidFolderName, folder_directory, ROOT, name)

    def test_reasonsAreSafeToSend(self):
        """
        A refusal's text is printable ASCII without the name, so it can go
        into an IMAP response as it is (a name with CR LF cannot inject one).
        """
        for name, _ in HOSTILE:
            reason = _refusal(name)
            self.assertTrue(reason and reason.isascii() and reason.isprintable(), (name, reason))
            self.assertTrue(reason.startswith("folder name"), reason)
            if len(name) > 2:
                self.assertNotIn(name, reason)

    def test_reasons(self):
        self.assertEqual(_refusal(""), "folder name is empty")
        self.assertIn("U+202E", _refusal("\u202ex"))
        self.assertIn("U+000A", _refusal("a\nb"))
        self.assertIn("not valid Unicode", _refusal("\ud800"))
        self.assertIn("too long to store", _refusal("é" * 200))
        self.assertIn("255 characters", _refusal("x" * 300))
        self.assertIn("32 levels", _refusal(".".join(["a"] * 33)))
        self.assertIn("wildcards", _refusal("a*"))
        self.assertIn('"~"', _refusal("~x"))

    def test_notAString(self):
        self.assertRaises(TypeError, normalize_folder_name, b"INBOX")

    def test_acceptedNames(self):
        self.assertEqual([normalize_folder_name(name) for name, _ in ACCEPTED],
                         [canonical for _, canonical in ACCEPTED])

    def test_idempotent(self):
        for _, canonical in ACCEPTED:
            self.assertEqual(normalize_folder_name(canonical), canonical)

    def test_inboxOnlyInAscii(self):
        """
        Only the ASCII spelling of INBOX is INBOX (RFC 3501 section 5.1):
        "\u0131nbox" upper-cases to "INBOX" in Python but is another name.
        """
        self.assertEqual("\u0131nbox".upper(), "INBOX")
        self.assertNotEqual(folder_directory(ROOT, "\u0131nbox"), ROOT)

    def test_nfc(self):
        """
        Decomposed and composed spellings are one folder (RFC 9051 section
        5.1 allows converting to NFC).
        """
        self.assertEqual(folder_directory(ROOT, "Cafe\u0301"), folder_directory(ROOT, "Café"))

    def test_limits(self):
        """
        The whole directory name, with its dot, fits NAME_MAX exactly; one
        more byte, or one more level, is refused.
        """
        longest = "x" * (MAX_DIRECTORY_NAME_BYTES - 1)
        self.assertEqual(len(folder_directory(ROOT, longest).name), MAX_DIRECTORY_NAME_BYTES)
        self.assertIsNotNone(_refusal(longest + "x"))
        self.assertIsNone(_refusal(".".join(["a"] * MAX_DEPTH)))
        self.assertIsNotNone(_refusal(".".join(["a"] * (MAX_DEPTH + 1))))
        self.assertIsNotNone(_refusal("x" * 100 + "é" * 60))


class DirectoryTests(SynchronousTestCase):
    def test_codec(self):
        """
        Twisted's codec is RFC 3501 section 5.1.3's modified UTF-7: "&" is
        "&-", BASE64 uses "," for "/", one run per stretch of non-ASCII.
        """
        self.assertEqual("&".encode("imap4-utf-7"), b"&-")
        self.assertEqual("台北".encode("imap4-utf-7"), b"&U,BTFw-")
        self.assertEqual("éç".encode("imap4-utf-7"), b"&AOkA5w-")

    def test_inboxIsTheRoot(self):
        for name in ("INBOX", "inbox", "InBoX"):
            self.assertEqual(folder_directory(ROOT, name), ROOT)

    def test_directoryNames(self):
        """
        Directories are named as Dovecot and Courier name them.
        """
        expected = {
            "Café.Reçus": ".Caf&AOk-.Re&AOc-us",
            "A&B": ".A&-B",
            "Sent": ".Sent",
            "Archive.2024": ".Archive.2024",
            "inbox.Sub": ".INBOX.Sub",
            "日本語": ".&ZeVnLIqe-",
            "台北.日本語": ".&U,BTFw-.&ZeVnLIqe-",
            "\U0001f600": ".&2D3eAA-",
            "é ç": ".&AOk- &AOc-",
        }
        self.assertEqual({name: folder_directory(ROOT, name).name for name in expected},
                         expected)

    def test_insideRootAndRoundTrip(self):
        """
        Every accepted name maps to a direct child of the root (INBOX: the
        root), and listing that directory gives the canonical name back.
        """
        for name, canonical in ACCEPTED:
            directory = folder_directory(ROOT, name)
            if canonical == "INBOX":
                self.assertEqual(directory, ROOT)
                continue
            self.assertEqual(directory.parent, ROOT, name)
            self.assertEqual(folder_name_from_directory(directory.name), canonical)

    def test_relativeRoot(self):
        self.assertEqual(folder_directory(Path("."), "Sent"), Path(".Sent"))
        self.assertEqual(folder_directory(Path("a/.."), "Sent"), Path("a/../.Sent"))

    def test_escapeIsAssertedNotAssumed(self):
        """
        Even if encoding produced a hostile directory name, folder_directory
        refuses to return a path that is not a child of the root.
        """
        for bad in ("..", ".", "/etc", "a/b", "../x", ".a\x00"):
            self.patch(names, "_directory_name", lambda name, bad=bad: bad)
            self.assertRaises(AssertionError, folder_directory, ROOT, "Sent")


class FromDirectoryTests(SynchronousTestCase):
    def test_notFolders(self):
        """
        Entries that are not the exact directory of a valid folder are not
        folders: Maildir's own directories, dot entries, Dovecot's trash,
        INBOX (the root), and non-canonical or hostile encodings.
        """
        not_folders = [
            "cur", "new", "tmp", "courierimapkeywords", "Sent",
            ".", "..", "..DOVECOT-TRASHED", "..mailsrv-deleted",
            ".INBOX", ".inbox", ".Inbox.Sub",
            ".&AGE-",  # "a" in BASE64 (RFC 3501 5.1.3: MUST NOT)
            ".Caf&AOk-&AOc-",  # two adjacent runs
            ".Caf&AOk",  # run not closed
            ".&AC4-",  # encoded ".": a hidden separator
            ".a&AC8-b",  # encoded "/"
            ".&AAA-",  # encoded NUL
            ".&AAo-",  # encoded LF
            ".&2AA-",  # lone surrogate
            ".&A-", ".&!!-",  # not BASE64
            ".Cafe&AwE-",  # decomposed é (not NFC)
            ".a..b", ".a.", ".%", ".a*", ".~x", ". a",
            ".\udcff",  # undecodable bytes in the file name
            ".caf\u00e9",  # 8-bit, not modified UTF-7
            "." + "x" * MAX_DIRECTORY_NAME_BYTES,
        ]
        self.assertEqual({d: folder_name_from_directory(d) for d in not_folders},
                         dict.fromkeys(not_folders))

    def test_folders(self):
        self.assertEqual(folder_name_from_directory(".Caf&AOk-.Re&AOc-us"), "Café.Reçus")
        self.assertEqual(folder_name_from_directory(".INBOX.Sub"), "INBOX.Sub")
        self.assertEqual(folder_name_from_directory(".&-"), "&")
        self.assertEqual(folder_name_from_directory(".Trash"), "Trash")


class HierarchyTests(SynchronousTestCase):
    def test_isInside(self):
        self.assertTrue(is_inside("A", "A.B"))
        self.assertTrue(is_inside("A", "A.B.C"))
        self.assertTrue(is_inside("INBOX", "INBOX.Sub"))
        self.assertFalse(is_inside("A", "A"))
        self.assertFalse(is_inside("A", "AB"))
        self.assertFalse(is_inside("A.B", "A"))
        self.assertFalse(is_inside("B", "A.B"))

    def test_parentNames(self):
        self.assertEqual(parent_names("A.B.C"), ["A", "A.B"])
        self.assertEqual(parent_names("A"), [])
        self.assertEqual(parent_names("INBOX.Sub"), ["INBOX"])
