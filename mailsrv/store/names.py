"""
Folder names: the only way the store turns an IMAP folder name into a path,
and the boundary that keeps a name from addressing anything outside a
user's store.

A name arrives as Unicode (the IMAP layer has decoded modified UTF-7 or
UTF-8); L{normalize_folder_name} checks it and returns its one canonical
form, and L{folder_directory} maps that to a Maildir++ directory, stored in
modified UTF-7 (RFC 3501 section 5.1.3) as Dovecot and Courier store it, so
a store moved between them keeps its folders.

The rules follow Dovecot's own checks (C{mailbox_verify_name} and
C{mailbox_list_is_valid_fs_name} in lib-storage: no empty levels, no "/",
no leading "~", no control characters in new names, a level at most 255
bytes), made stricter where RFC 6855 section 3 says names MUST NOT contain
something and where an invisible character would make two names look alike:

 - Unicode is normalized to NFC, as RFC 9051 section 5.1 allows ("servers
   MAY accept a denormalized UTF-8 mailbox name and convert it to ... NFC")
   and RFC 5198 section 2 asks of senders: "Café" typed on two systems is
   one folder, not two look-alikes.  Every command goes through this
   function, so SELECT opens what CREATE made, as RFC 9051 requires.
   Unassigned code points are refused: only for assigned ones does Unicode
   promise that NFC stays NFC in later versions.
 - Control characters (C0, DEL, C1), line and paragraph separators, other
   invisible or formatting characters (text-direction overrides such as
   U+202E, zero-width spaces, byte-order marks), spaces other than U+0020
   and private-use characters are refused: whatever C{str.isprintable}
   rejects.  The exception is the zero-width non-joiner and joiner (U+200C,
   U+200D), which Persian and Indic spelling and emoji sequences need;
   they may not start or end a level, so a level cannot be invisible.
 - "%" and "*" are refused: RFC 3501 section 5.1 allows them but notes that
   such names cannot be used with LIST, whose wildcards they are.
 - "~" may not start a name (it may start a deeper level): old servers read
   "~user" as a home directory, and Dovecot refuses it for that reason.
 - "#" is allowed, as in Dovecot: this store has one namespace, so the
   namespace convention of RFC 3501 section 5.1.2 has nothing to mean here.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import twisted.mail.imap4  # noqa: F401 (registers the "imap4-utf-7" codec)

from mailsrv.store.interfaces import StoreError

#: The IMAP hierarchy separator, and Maildir++'s level separator on disk.
SEPARATOR = "."

#: Longest folder name, in characters.  Maildir++ keeps a whole name in one
#: directory name, so the binding limit is MAX_DIRECTORY_NAME_BYTES below;
#: this is the same number in characters, checked first because it is cheap
#: and its refusal easy to understand.
MAX_NAME_LENGTH = 255

#: Most levels in a name.  CREATE makes every missing parent (RFC 3501
#: section 6.3.3), so this bounds the directories one command can make.
MAX_DEPTH = 32

#: Longest directory name ("." and the encoded name), in bytes: NAME_MAX of
#: Linux file systems (ext4, XFS, Btrfs) and of most others.
MAX_DIRECTORY_NAME_BYTES = 255

_INBOX = "INBOX"
_CODEC = "imap4-utf-7"
_JOINERS = frozenset("\u200c\u200d")
_UNPRINTABLE_REASONS = {
    "Cc": "a control character",
    "Cf": "an invisible formatting character",
    "Cn": "an unassigned character",
    "Co": "a private-use character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Zs": "a space other than the ordinary space",
}


class InvalidFolderName(StoreError, ValueError):
    """
    A folder name the store refuses.  C{str()} is the reason, in plain
    ASCII and without the name itself, so it can go into an IMAP response
    as it is.
    """


def normalize_folder_name(name: str) -> str:
    """
    Check a folder name as the client gave it (decoded to Unicode) and
    return its canonical form: NFC, and "INBOX" in capitals when the first
    level is INBOX in any case (RFC 3501 section 5.1); otherwise unchanged.

    @raise InvalidFolderName: for any name the module docstring rules out.
    """
    if name == _INBOX:
        return name  # every delivery names it
    if not isinstance(name, str):
        raise TypeError(f"folder name must be str, not {type(name).__name__}")
    if not name:
        raise InvalidFolderName("folder name is empty")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidFolderName("folder name is not valid Unicode") from None
    name = unicodedata.normalize("NFC", name)
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidFolderName(f"folder name is longer than {MAX_NAME_LENGTH} characters")
    levels = name.split(SEPARATOR)
    if len(levels) > MAX_DEPTH:
        raise InvalidFolderName(f"folder name has more than {MAX_DEPTH} levels")
    for char in name:
        _check_character(char)
    for level in levels:
        _check_level(level)
    if name.startswith("~"):
        raise InvalidFolderName('folder name cannot start with "~"')
    if levels[0].isascii() and levels[0].upper() == _INBOX:
        name = SEPARATOR.join([_INBOX, *levels[1:]])
    if len(_directory_name(name)) > MAX_DIRECTORY_NAME_BYTES:
        raise InvalidFolderName("folder name is too long to store")
    return name


def _check_character(char: str) -> None:
    if char in "/\\":
        raise InvalidFolderName('folder name cannot contain "/" or "\\"')
    if char in "%*":
        raise InvalidFolderName('folder name cannot contain "%" or "*" (LIST wildcards)')
    if char.isprintable() or char in _JOINERS:
        return
    reason = _UNPRINTABLE_REASONS.get(unicodedata.category(char), "an unprintable character")
    raise InvalidFolderName(f"folder name cannot contain U+{ord(char):04X}, {reason}")


def _check_level(level: str) -> None:
    if not level:
        raise InvalidFolderName(
            f'folder name cannot start or end with "{SEPARATOR}" or have two in a row')
    if level[0].isspace() or level[-1].isspace():
        raise InvalidFolderName("folder name levels cannot start or end with a space")
    if level[0] in _JOINERS or level[-1] in _JOINERS:
        raise InvalidFolderName("folder name levels cannot start or end with a zero-width joiner")


def _directory_name(name: str) -> str:
    """
    The Maildir++ directory name of a checked, non-INBOX name.  "." cannot
    occur inside an encoded level (it is printable ASCII, so it stands for
    itself), which makes encoding the whole name the same as encoding each
    level.
    """
    return SEPARATOR + name.encode(_CODEC).decode("ascii")


def folder_directory(root: Path, name: str) -> Path:
    """
    The Maildir++ directory of a folder: C{root} for INBOX, else
    C{root / ("." + modified UTF-7 name)}, e.g. "Café.Reçus" is
    C{root / ".Caf&AOk-.Re&AOc-us"}.

    The name is checked (and normalized) again here, so no path is ever
    made from an unchecked name; the result is then verified, lexically,
    to be a direct child of C{root}, so a flaw in the checks above still
    cannot reach outside the store.

    @raise InvalidFolderName: if the name is refused.
    @raise AssertionError: if the directory would not be inside C{root}
        (a bug: an internal failure, not the client's).
    """
    name = normalize_folder_name(name)
    if name == _INBOX:
        return root
    dirname = _directory_name(name)
    directory = root / dirname
    if (
        dirname in (".", "..")
        or "/" in dirname
        or "\0" in dirname
        or directory.name != dirname
        or directory.parent != root
        or Path(os.path.normpath(directory)).parent != Path(os.path.normpath(root))
    ):
        raise AssertionError(f"folder directory {dirname!r} is not inside {str(root)!r}")
    return directory


def folder_name_from_directory(dirname: str) -> str | None:
    """
    The folder stored in a directory of the store's root, for listing:
    ".Caf&AOk-.Re&AOc-us" is "Café.Reçus".

    Only the exact inverse of L{folder_directory} counts, so a folder is
    listed under the one name that opens it again.  L{None} for anything
    else: names without a leading ".", "." and "..", names that do not
    decode or that the rules refuse, ".INBOX" (INBOX is the root itself),
    and names that are not canonical (".inbox.Sub", a name not in NFC,
    modified UTF-7 encoded in a roundabout way).  Names starting with ".."
    are never folders, so the store may use them for its own directories.
    """
    if not dirname.startswith(SEPARATOR) or not dirname.isascii():
        return None
    try:
        name = normalize_folder_name(dirname[1:].encode("ascii").decode(_CODEC))
    except ValueError:  # InvalidFolderName, UnicodeDecodeError
        return None
    if name == _INBOX or _directory_name(name) != dirname:
        return None
    return name


def is_inside(parent_name: str, name: str) -> bool:
    """
    Whether C{name} is strictly below C{parent_name} in the hierarchy, for
    RENAME and DELETE ("A.B" is inside "A"; "A" and "AB" are not).  Both
    names must be normalized.
    """
    return name.startswith(parent_name + SEPARATOR)


def parent_names(name: str) -> list[str]:
    """
    The names above a normalized name, outermost first: "A.B.C" gives
    ["A", "A.B"], the folders CREATE makes if missing (RFC 3501 section
    6.3.3).
    """
    levels = name.split(SEPARATOR)
    return [SEPARATOR.join(levels[:i]) for i in range(1, len(levels))]
