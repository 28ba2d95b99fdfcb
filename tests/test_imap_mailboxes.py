"""
The IMAP mailbox commands one by one (RFC 3501 6.3: CREATE, DELETE,
RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, STATUS; NAMESPACE, RFC 2342),
over a bare TLS socket against the real listeners of an in-process server,
compared with what the RFCs require.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mailsrv.store.maildir import user_directory
from mailsrv.store.names import folder_name_from_directory
from tests.test_imap_server import ALICE, MESSAGE, IMAPTestCase, Raw

#: What LIST "" "*" shows to a new user: INBOX and the special-use
#: folders the store makes for everyone (RFC 6154 2).
NEW_USER_LIST = [
    b'* LIST (\\HasNoChildren) "." INBOX',
    b'* LIST (\\HasNoChildren \\Archive) "." Archive',
    b'* LIST (\\HasNoChildren \\Drafts) "." Drafts',
    b'* LIST (\\HasNoChildren \\Junk) "." Junk',
    b'* LIST (\\HasNoChildren \\Sent) "." Sent',
    b'* LIST (\\HasNoChildren \\Trash) "." Trash',
]

#: The folders a new user is subscribed to.
NEW_USER_LSUB = [b'* LSUB () "." ' + name
                 for name in (b"Archive", b"Drafts", b"Junk", b"Sent", b"Trash")]

_STATUS = re.compile(rb"^\* STATUS (\S+) \(((?:[A-Z]+ \d+)(?: [A-Z]+ \d+)*)\)$")


def run(raw: Raw, *commands: bytes, prefix: bytes = b"c") -> list[list[bytes]]:
    """
    Send each command under its own tag (c0, c1, ...), one after the
    other, and return each one's response lines, the tagged one last.
    """
    answers = []
    for number, command in enumerate(commands):
        tag = prefix + b"%d" % number
        raw.send(tag + b" " + command + b"\r\n")
        answers.append(raw.until_tagged(tag))
    return answers


def append(name: bytes, flags: bytes = b"", message: bytes = MESSAGE) -> bytes:
    """
    An APPEND command with a non-synchronizing literal (RFC 7888).
    """
    return b"APPEND %s (%s) {%d+}\r\n" % (name, flags, len(message)) + message


def status(line: bytes) -> tuple[bytes, dict[bytes, int]]:
    """
    The mailbox name and the items of an untagged STATUS response
    (RFC 3501 7.2.4), whatever order the items come in.
    """
    match = _STATUS.match(line)
    if match is None:
        raise AssertionError(f"not a STATUS response: {line!r}")
    words = match[2].split()
    return match[1], {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}


def tagged(answers: list[list[bytes]]) -> list[bytes]:
    """
    The tagged line of each command.
    """
    return [lines[-1] for lines in answers]


class MailboxCommandTestCase(IMAPTestCase):
    def session(self, *commands: bytes, messages: int = 0) -> list[list[bytes]]:
        """
        Alice's responses to C{commands}, in a new session with INBOX
        selected and C{messages} messages in it (call in a thread).
        """
        return run(self.raw_session(messages=messages), *commands)

    def answers(self, *commands: bytes, messages: int = 0):
        """
        L{session} run in a thread: a Deferred of the responses.
        """
        return self.in_thread(lambda: self.session(*commands, messages=messages))

    def home(self) -> Path:
        return user_directory(self.settings.store.path, ALICE)

    def assertListed(self, lines: list[bytes], expected: list[bytes], tag: bytes) -> None:
        """
        LIST or LSUB responses: exactly these untagged lines, in any order
        (RFC 3501 does not order them), then the tagged OK.
        """
        self.assertEqual(sorted(lines[:-1]), sorted(expected))
        self.assertRegex(lines[-1], rb"^" + tag + rb" OK ")


class CreateTests(MailboxCommandTestCase):
    async def test_createdFolderIsListedAndSelectable(self):
        """
        RFC 3501 6.3.3: CREATE makes a mailbox that LIST shows and SELECT
        opens, empty.
        """
        create, listed, select = await self.answers(
            b"CREATE Projects", b'LIST "" "*"', b"SELECT Projects")
        self.assertEqual(create, [b"c0 OK CREATE completed"])
        self.assertListed(listed, [*NEW_USER_LIST, b'* LIST (\\HasNoChildren) "." Projects'],
                          b"c1")
        self.assertIn(b"* 0 EXISTS", select)
        self.assertEqual(select[-1], b"c2 OK [READ-WRITE] SELECT completed")

    async def test_createMakesSuperiorNames(self):
        """
        RFC 3501 6.3.3: a name with the hierarchy delimiter (the one
        LIST "" "" announces, 6.3.8) creates the superior names that are
        missing; here they become real, selectable mailboxes, and
        \\HasChildren / \\HasNoChildren tell which have children (RFC 3348).
        """
        def session():
            raw = self.raw_session()
            [delimiter_reply] = run(raw, b'LIST "" ""')
            match = re.match(rb'^\* LIST \([^)]*\) "(.)" ""$', delimiter_reply[0])
            self.assertIsNotNone(match, delimiter_reply)
            d = match[1]
            return d, run(raw, b"CREATE A%sB%sC" % (d, d), b'LIST "" "A*"', b"SELECT A",
                          b"SELECT A%sB" % d, prefix=b"d")

        d, (create, listed, select_a, select_ab) = await self.in_thread(session)
        self.assertEqual(d, b".")
        self.assertEqual(create, [b"d0 OK CREATE completed"])
        self.assertListed(listed, [
            b'* LIST (\\HasChildren) "." A',
            b'* LIST (\\HasChildren) "." A.B',
            b'* LIST (\\HasNoChildren) "." A.B.C',
            b'* LIST (\\HasNoChildren \\Archive) "." Archive'], b"d1")
        self.assertEqual(select_a[-1], b"d2 OK [READ-WRITE] SELECT completed")
        self.assertEqual(select_ab[-1], b"d3 OK [READ-WRITE] SELECT completed")

    async def test_createWithTrailingDelimiter(self):
        """
        RFC 3501 6.3.3: a name ending with the hierarchy delimiter declares
        that names will be created under it; the mailbox made is the name
        without the delimiter, and names can then be created below it.
        """
        create, listed, child, after, doubled, none = await self.answers(
            b"CREATE Topics.", b'LIST "" "Topics*"', b"CREATE Topics.Rust",
            b'LIST "" "Topics*"', b"CREATE U..", b'LIST "" "U*"')
        self.assertEqual(create, [b"c0 OK CREATE completed"])
        # Only one delimiter is a declaration: "U." has an empty level.
        self.assertRegex(doubled[-1], rb"^c4 (NO|BAD) ")
        self.assertEqual(none, [b"c5 OK LIST completed"])
        self.assertListed(listed, [b'* LIST (\\HasNoChildren) "." Topics'], b"c1")
        self.assertEqual(child, [b"c2 OK CREATE completed"])
        self.assertListed(after, [b'* LIST (\\HasChildren) "." Topics',
                                  b'* LIST (\\HasNoChildren) "." Topics.Rust'], b"c3")

    async def test_createInboxInAnyCase(self):
        """
        RFC 3501 5.1: INBOX is case-insensitive; 6.3.3: creating it is an
        error (RFC 5530 3: [ALREADYEXISTS]).  A name below INBOX, in any
        case, is created as INBOX.<name> and listed with INBOX in capitals.
        """
        answers = await self.answers(
            b"CREATE INBOX", b"CREATE inbox", b'CREATE "InBoX"',
            b"CREATE inbox.Sub", b'LIST "" "*"', b'LIST "" "inbox%"')
        self.assertEqual([len(lines) for lines in answers[:3]], [1, 1, 1])
        self.assertEqual([line.split(b" ", 3)[:3] for line in tagged(answers[:3])],
                         [[b"c%d" % n, b"NO", b"[ALREADYEXISTS]"] for n in range(3)])
        self.assertEqual(answers[3], [b"c3 OK CREATE completed"])
        self.assertListed(answers[4], [b'* LIST (\\HasChildren) "." INBOX',
                                       *NEW_USER_LIST[1:],
                                       b'* LIST (\\HasNoChildren) "." INBOX.Sub'], b"c4")
        self.assertListed(answers[5], [b'* LIST (\\HasChildren) "." INBOX'], b"c5")

    async def test_createExistingName(self):
        """
        RFC 3501 6.3.3: creating a name that exists is an error; RFC 5530 3
        gives its response code: "ALREADYEXISTS: The operation attempts to
        create something which already exists".  A superior name that
        CREATE made exists too.
        """
        answers = await self.answers(
            b"CREATE Trash", b"CREATE Projects", b"CREATE Projects",
            b"CREATE A.B", b"CREATE A", b'LIST "" "*"')
        self.assertEqual(tagged(answers[1:2] + answers[3:4]),
                         [b"c1 OK CREATE completed", b"c3 OK CREATE completed"])
        self.assertListed(answers[5], [*NEW_USER_LIST, b'* LIST (\\HasNoChildren) "." Projects',
                                       b'* LIST (\\HasChildren) "." A',
                                       b'* LIST (\\HasNoChildren) "." A.B'], b"c5")
        self.assertEqual([len(answers[n]) for n in (0, 2, 4)], [1, 1, 1])
        self.assertEqual([answers[n][0].split(b" ", 3)[:3] for n in (0, 2, 4)],
                         [[b"c%d" % n, b"NO", b"[ALREADYEXISTS]"] for n in (0, 2, 4)])

    async def test_namesThatLeaveTheStoreAreRefused(self):
        """
        Names that try to reach outside the user's store ("..", "/", an
        absolute path), the empty name, and names with NUL or control
        characters (written plainly, in a literal, or encoded in modified
        UTF-7) are refused with NO or BAD (RFC 3501 6.3.3: NO "can't create
        mailbox with that name"; a NUL in a literal is a syntax error, 9:
        CHAR8 excludes it), and nothing is made anywhere on disk.  RENAME to
        such a name is refused likewise (6.3.5).
        """
        bad_names = [b'"../x"', b'"/abs"', b'"a/../../b"', b'".."', b'"."', b'""',
                     b"{3+}\r\na\x00b", b'"a\x01b"', b'"x\x7fy"', b'"tab\tbed"', b'"&AAA-"',
                     b'"&AAE-"', b'"\xc3\xa9\x01"', b'"..&AC8-etc"']
        tree_root = self.settings.data_dir.parent

        def tree():
            return sorted(Path(directory) for directory, _, _ in os.walk(tree_root))

        def session():
            raw = self.raw_session()
            [before] = run(raw, b'LIST "" "*"', prefix=b"b")
            directories = tree()
            answers = run(raw, *[b"CREATE " + name for name in bad_names],
                          *[b"RENAME Archive " + name for name in bad_names[:6]])
            [after] = run(raw, b'LIST "" "*"', prefix=b"a")
            return before, directories, answers, after, tree()

        before, directories_before, answers, after, directories_after = \
            await self.in_thread(session)
        for number, lines in enumerate(answers):
            self.assertEqual(len(lines), 1, lines)
            self.assertRegex(lines[0], rb"^c%d (NO|BAD) " % number)
        self.assertEqual(after[:-1], before[:-1])
        self.assertEqual(directories_after, directories_before)


class DeleteTests(MailboxCommandTestCase):
    async def test_deleteRefused(self):
        """
        RFC 3501 6.3.4: deleting INBOX (in any case) or a name that does not
        exist is an error; RFC 5530 3 gives [NONEXISTENT] for the latter.
        INBOX is still there afterwards.
        """
        answers = await self.answers(
            b"DELETE INBOX", b"DELETE inbox", b"DELETE Nope", b"DELETE Nope.Sub",
            b'LIST "" "*"', b"STATUS INBOX (MESSAGES)", messages=1)
        self.assertRegex(answers[0][-1], rb"^c0 NO ")
        self.assertRegex(answers[1][-1], rb"^c1 NO ")
        self.assertRegex(answers[2][-1], rb"^c2 NO \[NONEXISTENT\] ")
        self.assertRegex(answers[3][-1], rb"^c3 NO \[NONEXISTENT\] ")
        self.assertListed(answers[4], NEW_USER_LIST, b"c4")
        self.assertEqual(answers[5][0], b"* STATUS INBOX (MESSAGES 1)")

    async def test_deleteFolderWithChildren(self):
        """
        RFC 3501 6.3.4: DELETE must not remove inferior names; deleting a
        name that has some removes its messages and leaves it \\Noselect
        (the server's choice; the other is NO).  Deleting a \\Noselect name
        that still has inferiors is an error.  Once the last child is gone
        the placeholder disappears, and CREATE makes a fresh mailbox.
        """
        answers = await self.answers(
            b"CREATE A.B", append(b"A"), b"DELETE A", b'LIST "" "A*"',
            b'LIST "" "%"', b"SELECT A", b"DELETE A", b"DELETE A.B", b'LIST "" "A*"',
            b"CREATE A", b"STATUS A (MESSAGES)")
        self.assertEqual(answers[2], [b"c2 OK DELETE completed"])
        self.assertListed(answers[3], [
            b'* LIST (\\HasChildren \\Noselect) "." A', b'* LIST (\\HasNoChildren) "." A.B',
            b'* LIST (\\HasNoChildren \\Archive) "." Archive'], b"c3")
        self.assertListed(answers[4], [*NEW_USER_LIST,
                                       b'* LIST (\\HasChildren \\Noselect) "." A'], b"c4")
        self.assertRegex(answers[5][-1], rb"^c5 NO ")
        self.assertRegex(answers[6][-1], rb"^c6 NO ")
        self.assertEqual(answers[7], [b"c7 OK DELETE completed"])
        self.assertListed(answers[8], [b'* LIST (\\HasNoChildren \\Archive) "." Archive'], b"c8")
        self.assertEqual(answers[9], [b"c9 OK CREATE completed"])
        self.assertEqual(answers[10][0], b"* STATUS A (MESSAGES 0)")

    async def test_childrenAttributesFollowChanges(self):
        """
        RFC 3348 3: \\HasChildren while a mailbox has a child, and
        \\HasNoChildren once the last one is deleted.
        """
        answers = await self.answers(
            b"CREATE Work.Old", b'LIST "" "Work"', b"DELETE Work.Old",
            b'LIST "" "Work"')
        self.assertListed(answers[1], [b'* LIST (\\HasChildren) "." Work'], b"c1")
        self.assertListed(answers[3], [b'* LIST (\\HasNoChildren) "." Work'], b"c3")

    async def test_deleteSelectedFolder(self):
        """
        RFC 3501 6.3.4: a session may delete the mailbox it has selected
        (RFC 3501 does not forbid it); its messages are gone, the session
        goes on, and a new mailbox of that name starts empty.
        """
        answers = await self.answers(
            b"CREATE Box", append(b"Box"), append(b"Box"), b"SELECT Box",
            b"DELETE Box", b"NOOP", b'LIST "" "Box"', b"STATUS Box (MESSAGES)", b"SELECT INBOX",
            b"CREATE Box", b"STATUS Box (MESSAGES)")
        self.assertIn(b"* 2 EXISTS", answers[3])
        self.assertEqual(answers[4], [b"c4 OK DELETE completed"])
        self.assertEqual(answers[5], [b"c5 OK NOOP completed"])
        self.assertListed(answers[6], [], b"c6")
        self.assertRegex(answers[7][-1], rb"^c7 NO \[NONEXISTENT\] ")
        self.assertEqual(answers[8][-1], b"c8 OK [READ-WRITE] SELECT completed")
        self.assertEqual(answers[10][0], b"* STATUS Box (MESSAGES 0)")

    async def test_deleteFolderSelectedElsewhere(self):
        """
        RFC 2180 3.3: a mailbox another session has selected may be
        deleted, that session being disconnected with an untagged BYE (as
        Dovecot does); an idling one is told at once.  Other sessions go
        on: a new one selects INBOX.
        """
        def session():
            other = self.raw_session()
            idler = self.raw_session()
            run(other, b"CREATE Box", append(b"Box"), b"SELECT Box", prefix=b"o")
            run(idler, b"SELECT Box", prefix=b"s")
            idler.send(b"i IDLE\r\n")
            idling = idler.line()
            deleted = self.session(b"DELETE Box")
            told = idler.line()
            other.send(b"p NOOP\r\n")
            bye = other.line()
            try:
                after = other.line()
            except (EOFError, OSError):
                after = None
            return idling, deleted, told, bye, after, self.session(b"SELECT INBOX")

        idling, [deleted], told, bye, after, [selected] = await self.in_thread(session)
        self.assertEqual(idling, b"+ idling")
        self.assertEqual(deleted, [b"c0 OK DELETE completed"])
        self.assertEqual(told, b"* BYE The selected folder Box is gone")
        self.assertEqual(bye, b"* BYE The selected folder Box is gone")
        self.assertIsNone(after)
        self.assertEqual(selected[-1], b"c0 OK [READ-WRITE] SELECT completed")

    async def test_folderMadeAnewWhileSelected(self):
        """
        RFC 2180 3.3, RFC 3501 2.3.1.1: a selected folder deleted and made
        anew elsewhere is another folder (new UIDVALIDITY); the session
        that had the old one selected is disconnected, not left to mix the
        two up.
        """
        def session():
            other = self.raw_session()
            run(other, b"CREATE Box", append(b"Box"), b"SELECT Box", prefix=b"o")
            self.session(b"DELETE Box", b"CREATE Box", append(b"Box"))
            other.send(b"p NOOP\r\n")
            return other.line()

        told = await self.in_thread(session)
        self.assertEqual(told, b"* BYE The selected folder Box is gone")

    async def test_renameTellsIdlerInTheOldName(self):
        """
        RFC 2180 3.3: a session idling in a folder renamed elsewhere (or in
        a folder below it) is disconnected at once with BYE.
        """
        def session():
            idler = self.raw_session()
            run(idler, b"CREATE Box.Sub", b"SELECT Box.Sub", prefix=b"o")
            idler.send(b"i IDLE\r\n")
            idling = idler.line()
            renamed = self.session(b"RENAME Box Crate")
            return idling, renamed, idler.line()

        idling, [renamed], told = await self.in_thread(session)
        self.assertEqual(idling, b"+ idling")
        self.assertEqual(renamed, [b"c0 OK RENAME completed"])
        self.assertEqual(told, b"* BYE The selected folder Box.Sub is gone")

    async def test_deleteFolderSelectedElsewhereKeepsIdleWorking(self):
        """
        RFC 2177: a session idling in INBOX hears of a message that another
        program puts in the Maildir, also after a folder that a third
        session had selected was deleted.
        """
        def session():
            idler = self.raw_session()
            other = self.raw_session()
            run(other, b"CREATE Box", b"SELECT Box", prefix=b"o")
            self.session(b"DELETE Box")
            idler.send(b"i IDLE\r\n")
            idling = idler.line()
            idler.sock.settimeout(5)
            (self.home() / "new" / "1700000000.M1P1.elsewhere").write_bytes(MESSAGE)
            try:
                told = idler.line()
            except TimeoutError:
                told = None
            return idling, told

        idling, told = await self.in_thread(session)
        self.assertEqual(idling, b"+ idling")
        self.assertEqual(told, b"* 1 EXISTS")


class RenameTests(MailboxCommandTestCase):
    async def test_renameMovesInferiors(self):
        """
        RFC 3501 6.3.5: inferior names are renamed with the mailbox, with
        their messages; the old names are gone.  Renaming to a name below
        a missing one makes that superior name exist (SHOULD), at least as
        a \\Noselect name with children.
        """
        answers = await self.answers(
            b"CREATE P.Q.R", append(b"P.Q"), b"RENAME P Z", b'LIST "" "*"',
            b"STATUS Z.Q (MESSAGES)", b"SELECT P.Q", b"RENAME Z N.M", b'LIST "" "N*"')
        self.assertEqual(answers[2], [b"c2 OK RENAME completed"])
        self.assertListed(answers[3], [*NEW_USER_LIST, b'* LIST (\\HasChildren) "." Z',
                                       b'* LIST (\\HasChildren) "." Z.Q',
                                       b'* LIST (\\HasNoChildren) "." Z.Q.R'], b"c3")
        self.assertEqual(answers[4][0], b"* STATUS Z.Q (MESSAGES 1)")
        self.assertRegex(answers[5][-1], rb"^c5 NO ")
        self.assertEqual(answers[6], [b"c6 OK RENAME completed"])
        superior = [line for line in answers[7] if line.endswith(b' "." N')]
        self.assertListed([line for line in answers[7] if line not in superior], [
            b'* LIST (\\HasChildren) "." N.M', b'* LIST (\\HasChildren) "." N.M.Q',
            b'* LIST (\\HasNoChildren) "." N.M.Q.R'], b"c7")
        self.assertEqual(len(superior), 1, answers[7])
        self.assertRegex(superior[0], rb'^\* LIST \(\\HasChildren( \\Noselect)?\) "\." N$')

    async def test_renameRefused(self):
        """
        RFC 3501 6.3.5: renaming a name that does not exist, or to a name
        that exists, is an error (RFC 5530 3: [NONEXISTENT] and
        [ALREADYEXISTS]), and so is moving a mailbox inside itself; nothing
        changes.
        """
        answers = await self.answers(
            b"CREATE Z.Q", b"RENAME Nope X", b"RENAME Z.Q Z.Q.W",
            b"RENAME Z Archive", b"RENAME INBOX Archive", b"RENAME Z.Q Z", b'LIST "" "*"')
        self.assertRegex(answers[1][-1], rb"^c1 NO \[NONEXISTENT\] ")
        self.assertRegex(answers[2][-1], rb"^c2 NO ")
        self.assertListed(answers[6], [*NEW_USER_LIST, b'* LIST (\\HasChildren) "." Z',
                                       b'* LIST (\\HasNoChildren) "." Z.Q'], b"c6")
        self.assertEqual([answers[n][-1].split(b" ", 3)[:3] for n in (3, 4, 5)],
                         [[b"c%d" % n, b"NO", b"[ALREADYEXISTS]"] for n in (3, 4, 5)])

    async def test_renameInbox(self):
        """
        RFC 3501 6.3.5: renaming INBOX moves its messages to the new mailbox
        and leaves INBOX empty (same UIDVALIDITY, UIDs not reused); its
        inferior names are unaffected.  The session that has INBOX selected
        is told the messages left (7.4.1).
        """
        def session():
            raw = self.raw_session(messages=2)
            return run(raw, b"CREATE INBOX.Sub", b"STATUS INBOX (UIDVALIDITY UIDNEXT)",
                       b"RENAME INBOX Old", b"NOOP", b'LIST "" "*"',
                       b"STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY)", b"STATUS Old (MESSAGES)",
                       b"STATUS INBOX.Sub (MESSAGES)")

        answers = await self.in_thread(session)
        _, before = status(answers[1][0])
        self.assertEqual(answers[2][-1], b"c2 OK RENAME completed")
        self.assertEqual(answers[2][:-1] + answers[3][:-1], [b"* 2 EXPUNGE", b"* 1 EXPUNGE"])
        self.assertListed(answers[4], [b'* LIST (\\HasChildren) "." INBOX', *NEW_USER_LIST[1:],
                                       b'* LIST (\\HasNoChildren) "." INBOX.Sub',
                                       b'* LIST (\\HasNoChildren) "." Old'], b"c4")
        self.assertEqual(status(answers[5][0]), (b"INBOX", {
            b"MESSAGES": 0, b"UIDNEXT": 3, b"UIDVALIDITY": before[b"UIDVALIDITY"]}))
        self.assertEqual(before[b"UIDNEXT"], 3)
        self.assertEqual(answers[6][0], b"* STATUS Old (MESSAGES 2)")
        self.assertEqual(answers[7][0], b"* STATUS INBOX.Sub (MESSAGES 0)")

    async def test_recreatedNameDoesNotReuseUIDs(self):
        """
        RFC 3501 6.3.4 and 6.3.5 (and 2.3.1.1): a mailbox created with the
        name of a deleted or renamed one does not reuse its UIDs unless its
        UIDVALIDITY differs.
        """
        answers = await self.answers(
            b"CREATE Box", append(b"Box"), append(b"Box"),
            b"STATUS Box (UIDVALIDITY UIDNEXT)", b"DELETE Box", b"CREATE Box",
            b"STATUS Box (UIDVALIDITY UIDNEXT)", append(b"Box"), b"RENAME Box Gone",
            b"CREATE Box", b"STATUS Box (UIDVALIDITY UIDNEXT)")
        first, after_delete, after_rename = (status(answers[n][0])[1] for n in (3, 6, 10))
        self.assertEqual(first[b"UIDNEXT"], 3)
        for later in (after_delete, after_rename):
            self.assertTrue(later[b"UIDVALIDITY"] != first[b"UIDVALIDITY"]
                            or later[b"UIDNEXT"] >= first[b"UIDNEXT"], (first, later))
        self.assertTrue(after_rename[b"UIDVALIDITY"] != after_delete[b"UIDVALIDITY"]
                        or after_rename[b"UIDNEXT"] > after_delete[b"UIDNEXT"],
                        (after_delete, after_rename))


class SubscriptionTests(MailboxCommandTestCase):
    async def test_subscribeUnsubscribeLsub(self):
        """
        RFC 3501 6.3.6, 6.3.7 and 6.3.9: SUBSCRIBE adds a name to what LSUB
        shows, UNSUBSCRIBE removes it; a subscribed name stays subscribed
        after its mailbox is deleted ("MUST NOT unilaterally remove").
        A reference name is prefixed to the pattern.
        """
        answers = await self.answers(
            b'LSUB "" "*"', b"CREATE Lists.Twisted", b"SUBSCRIBE Lists.Twisted",
            b"UNSUBSCRIBE Trash", b'LSUB "" "*"', b"DELETE Lists.Twisted", b'LSUB "" "*"',
            b'LSUB "Lists." "*"', b'LSUB "" "T*"')
        self.assertListed(answers[0], NEW_USER_LSUB, b"c0")
        self.assertEqual(tagged(answers[2:4]), [b"c2 OK SUBSCRIBE completed",
                                                b"c3 OK UNSUBSCRIBE completed"])
        expected = [*NEW_USER_LSUB[:-1], b'* LSUB () "." Lists.Twisted']
        self.assertListed(answers[4], expected, b"c4")
        self.assertEqual(answers[5], [b"c5 OK DELETE completed"])
        self.assertEqual(sorted(answers[6][:-1]), sorted(expected))
        self.assertEqual(answers[7][:-1], [b'* LSUB () "." Lists.Twisted'])
        self.assertListed(answers[8], [], b"c8")

    async def test_lsubPercentShowsUnsubscribedParent(self):
        """
        RFC 3501 6.3.9: when "foo/bar" is subscribed and "foo" is not, "a %
        wildcard to LSUB must return foo, not foo/bar ... and it MUST be
        flagged with the \\Noselect attribute".
        """
        answers = await self.answers(
            b"CREATE Lists.Twisted", b"SUBSCRIBE Lists.Twisted",
            b'LSUB "" "%"', b'LSUB "" "L%"')
        parent = b'* LSUB (\\Noselect) "." Lists'
        self.assertEqual((sorted(answers[2]), answers[3]),
                         (sorted([*NEW_USER_LSUB, parent, b"c2 OK LSUB completed"]),
                          [parent, b"c3 OK LSUB completed"]))


class ListTests(MailboxCommandTestCase):
    async def test_listDelimiter(self):
        """
        RFC 3501 6.3.8: LIST with an empty mailbox name returns the
        hierarchy delimiter and the root name (here empty), \\Noselect.
        """
        [answer] = await self.answers(b'LIST "" ""')
        self.assertEqual(answer, [b'* LIST (\\Noselect) "." ""', b"c0 OK LIST completed"])

    async def test_specialUseFolders(self):
        """
        RFC 6154 2: every new user has Drafts, Sent, Archive, Junk and
        Trash with their special-use attribute, in plain LIST (MAY) and
        with the SPECIAL-USE selection option (only those, MUST) and return
        option (MUST).
        """
        plain, selected, returned = await self.answers(
            b'LIST "" "*"', b'LIST (SPECIAL-USE) "" "*"',
            b'LIST "" "*" RETURN (SPECIAL-USE)')
        self.assertListed(plain, NEW_USER_LIST, b"c0")
        self.assertListed(selected, NEW_USER_LIST[1:], b"c1")
        self.assertListed(returned, NEW_USER_LIST, b"c2")

    async def test_listWildcardsAndReference(self):
        """
        RFC 3501 6.3.8: "*" matches across levels, "%" within one; the
        reference name is prefixed to the pattern; INBOX matches in any
        case.
        """
        answers = await self.answers(
            b"CREATE A.B.C", b'LIST "" "%"', b'LIST "" "A.%"', b'LIST "A." "%"',
            b'LIST "A." "*"', b'LIST "" "*C"', b'LIST "" "inbox"', b'LIST "" "Nope*"')
        self.assertListed(answers[1], [*NEW_USER_LIST, b'* LIST (\\HasChildren) "." A'], b"c1")
        self.assertListed(answers[2], [b'* LIST (\\HasChildren) "." A.B'], b"c2")
        self.assertListed(answers[3], [b'* LIST (\\HasChildren) "." A.B'], b"c3")
        self.assertListed(answers[4], [b'* LIST (\\HasChildren) "." A.B',
                                       b'* LIST (\\HasNoChildren) "." A.B.C'], b"c4")
        self.assertListed(answers[5], [b'* LIST (\\HasNoChildren) "." A.B.C'], b"c5")
        self.assertListed(answers[6], [b'* LIST (\\HasNoChildren) "." INBOX'], b"c6")
        self.assertListed(answers[7], [], b"c7")


class ModifiedUTF7Tests(MailboxCommandTestCase):
    async def test_modifiedUTF7Name(self):
        """
        RFC 3501 5.1.3: a name in modified UTF-7 is the Unicode name it
        encodes: "&AOk-t&AOk-" is the store's folder "\u00e9t\u00e9", and
        LIST, STATUS and a LIST pattern give it back in the same form.
        """
        answers = await self.answers(
            b"CREATE &AOk-t&AOk-", b'LIST "" "*"', b'LIST "" "&AOk-*"',
            b"STATUS &AOk-t&AOk- (MESSAGES)", b"SELECT &AOk-t&AOk-",
            b'CREATE "&2D3eAQ-"', b'LIST "" "&2D3eAQ-"')
        self.assertEqual(answers[0], [b"c0 OK CREATE completed"])
        self.assertListed(answers[1], [*NEW_USER_LIST,
                                       b'* LIST (\\HasNoChildren) "." &AOk-t&AOk-'], b"c1")
        self.assertListed(answers[2], [b'* LIST (\\HasNoChildren) "." &AOk-t&AOk-'], b"c2")
        self.assertEqual(answers[3][0], b"* STATUS &AOk-t&AOk- (MESSAGES 0)")
        self.assertEqual(answers[4][-1], b"c4 OK [READ-WRITE] SELECT completed")
        self.assertListed(answers[6], [b'* LIST (\\HasNoChildren) "." &2D3eAQ-'], b"c6")
        folders = {folder_name_from_directory(entry.name) for entry in self.home().iterdir()}
        self.assertIn("\u00e9t\u00e9", folders)
        self.assertIn("\U0001f601", folders)

    async def test_invalidModifiedUTF7Refused(self):
        """
        RFC 3501 5.1.3: "&" starts a base64 run that "-" ends, printable
        ASCII represents itself and "&" is written "&-"; a name breaking
        these rules is refused (NO or BAD) and nothing is created.
        """
        invalid = [b"&AOk", b"&AGE-", b'"&AOkAdADp-"', b"Caf&", b'"&Jjo"', b'"&U/BTFw-"']

        def session():
            raw = self.raw_session()
            [before] = run(raw, b'LIST "" "*"', prefix=b"b")
            answers = run(raw, *[b"CREATE " + name for name in invalid])
            [after] = run(raw, b'LIST "" "*"', prefix=b"a")
            return before, answers, after

        before, answers, after = await self.in_thread(session)
        for number, lines in enumerate(answers):
            self.assertEqual(len(lines), 1, lines)
            self.assertRegex(lines[0], rb"^c%d (NO|BAD) " % number)
        self.assertEqual(after[:-1], before[:-1])


class StatusTests(MailboxCommandTestCase):
    async def test_statusOfFolderNotSelected(self):
        """
        RFC 3501 6.3.10: STATUS of a mailbox that is not selected, before
        and after APPENDs: MESSAGES, RECENT (2.3.2: recent until a session
        selects it), UIDNEXT, UIDVALIDITY (the one APPENDUID names, RFC
        4315) and UNSEEN, in any order; a nonexistent mailbox gives NO
        ([NONEXISTENT], RFC 5530).
        """
        items = b"(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)"

        def session():
            raw = self.raw_session()
            answers = run(raw, b"CREATE Box", b"STATUS Box " + items, append(b"Box"),
                          append(b"Box", b"\\Seen"), b"STATUS Box " + items,
                          b"STATUS Box (UNSEEN MESSAGES)", b"STATUS Nope (MESSAGES)")
            run(self.raw_session(), b"SELECT Box", prefix=b"s")
            answers += run(raw, b"STATUS Box " + items, prefix=b"d")
            return answers

        answers = await self.in_thread(session)
        validity = int(re.match(rb"^c2 OK \[APPENDUID (\d+) 1\] ", answers[2][0])[1])
        self.assertRegex(answers[3][0], rb"^c3 OK \[APPENDUID %d 2\] " % validity)
        self.assertEqual(status(answers[1][0]), (b"Box", {
            b"MESSAGES": 0, b"RECENT": 0, b"UIDNEXT": 1, b"UIDVALIDITY": validity,
            b"UNSEEN": 0}))
        self.assertEqual(answers[1][1], b"c1 OK STATUS completed")
        self.assertEqual(status(answers[4][0]), (b"Box", {
            b"MESSAGES": 2, b"RECENT": 2, b"UIDNEXT": 3, b"UIDVALIDITY": validity,
            b"UNSEEN": 1}))
        self.assertEqual(status(answers[5][0]), (b"Box", {b"UNSEEN": 1, b"MESSAGES": 2}))
        self.assertRegex(answers[6][-1], rb"^c6 NO \[NONEXISTENT\] ")
        self.assertEqual(len(answers[6]), 1)
        self.assertEqual(status(answers[7][0]), (b"Box", {
            b"MESSAGES": 2, b"RECENT": 0, b"UIDNEXT": 3, b"UIDVALIDITY": validity,
            b"UNSEEN": 1}))

    async def test_statusOfSelectedFolder(self):
        """
        RFC 3501 6.3.10: "servers MUST be able to execute the STATUS
        command on the selected mailbox"; it counts an APPEND made in the
        same session.
        """
        answers = await self.answers(
            append(b"INBOX", b"\\Seen"), b"STATUS INBOX (MESSAGES UNSEEN UIDNEXT)",
            messages=2)
        [line] = [line for line in answers[1] if line.startswith(b"* STATUS ")]
        self.assertEqual(status(line), (b"INBOX", {b"MESSAGES": 3, b"UNSEEN": 2,
                                                   b"UIDNEXT": 4}))
        self.assertEqual(answers[1][-1], b"c1 OK STATUS completed")

    async def test_examineKeepsRecent(self):
        """
        RFC 3501 6.3.2: "EXAMINE MUST NOT cause messages to lose the
        \\Recent flag": after another session EXAMINEs a mailbox, STATUS
        still counts its new messages as RECENT, and so does (6.3.1) the
        first session to SELECT it.
        """
        def session():
            raw = self.raw_session()
            run(raw, b"CREATE Box", append(b"Box"), append(b"Box"), prefix=b"a")
            examined = run(self.raw_session(), b"EXAMINE Box", prefix=b"e")
            return examined, run(raw, b"STATUS Box (RECENT)", b"SELECT Box")

        [examined], (after, selected) = await self.in_thread(session)
        self.assertEqual(examined[-1], b"e0 OK [READ-ONLY] EXAMINE completed")
        recent = [line for line in selected if re.match(rb"^\* \d+ RECENT$", line)]
        self.assertEqual([after[0], *recent], [b"* STATUS Box (RECENT 2)", b"* 2 RECENT"])


class NamespaceTests(MailboxCommandTestCase):
    async def test_namespace(self):
        """
        RFC 2342 5: one personal namespace with an empty prefix and "." as
        its delimiter, no other users' or shared namespaces.
        """
        [answer] = await self.answers(b"NAMESPACE")
        self.assertEqual(answer, [b'* NAMESPACE (("" ".")) NIL NIL',
                                  b"c0 OK NAMESPACE completed"])
