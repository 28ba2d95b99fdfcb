"""
Tests for L{mailsrv.imap.parser}: IMAP4rev1 commands (RFC 3501 section 9)
as the protocol frames them, turned into typed values.
"""

from __future__ import annotations

import datetime
import io
import random

from twisted.trial.unittest import SynchronousTestCase

from mailsrv.imap.parser import (
    BadCharset,
    BodySection,
    Command,
    FetchItem,
    Literal,
    ParseError,
    SearchKey,
    SequenceSet,
    literal_at_end,
    parse_command,
    tag_of,
)


def parse(*pieces: str | bytes | Literal, utf8: bool = False) -> Command:
    """Parse a command given as its lines (str or bytes) and literals."""
    return parse_command(
        [piece.encode("utf-8") if isinstance(piece, str) else piece for piece in pieces],
        utf8=utf8)


def literal(data: bytes) -> Literal:
    return Literal(data=data, size=len(data))


def seq(*ranges: tuple[int | None, int | None]) -> SequenceSet:
    return SequenceSet(tuple(ranges))


def section(peek: bool = False, part: tuple[int, ...] = (), text: str | None = None,
            **kwargs) -> FetchItem:
    return FetchItem("SECTION", BodySection(peek, part, text, **kwargs))


SEEN = SearchKey("FLAG", ("\\Seen",))
ALL = SearchKey("ALL")


class FramingTests(SynchronousTestCase):
    """The helpers the protocol uses before a command is parsed."""

    def test_literal_at_end(self) -> None:
        """A "{n}" or LITERAL+ "{n+}" marker ends a line (RFC 3501 4.3, RFC 7888 3)."""
        self.assertEqual(literal_at_end(b"a LOGIN {3}"), (3, True))
        self.assertEqual(literal_at_end(b"a LOGIN bob {0+}"), (0, False))
        self.assertEqual(literal_at_end(b"a APPEND INBOX {4294967295}"), (4294967295, True))

    def test_no_literal(self) -> None:
        """A line without a trailing marker has no literal, even with braces elsewhere."""
        self.assertIsNone(literal_at_end(b"a NOOP"))
        self.assertIsNone(literal_at_end(b'a SEARCH SUBJECT "{3}"'))
        self.assertIsNone(literal_at_end(b'a SEARCH SUBJECT "{" x}'))
        self.assertIsNone(literal_at_end(b"a SEARCH SUBJECT x}"))

    def test_bad_literal_sizes(self) -> None:
        """A malformed, negative or over-32-bit count is refused, tag kept (RFC 3501 9)."""
        for line in (b"a LOGIN {}", b"a LOGIN {-1}", b"a LOGIN {4294967296}", b"a LOGIN {3a}",
                     b"a LOGIN {99999999999999999999}", b"a LOGIN {+}"):
            error = self.assertRaises(ParseError, literal_at_end, line)
            self.assertEqual(error.tag, "a")

    def test_tag_of(self) -> None:
        """The tag is any ASTRING-CHAR but "+", else "*" (RFC 3501 9, "tag")."""
        self.assertEqual(tag_of(b"A001 NOOP"), "A001")
        self.assertEqual(tag_of(b"a]b"), "a]b")
        for line in (b"", b" NOOP", b"a+b NOOP", b"a*b NOOP", b'"a" NOOP', b"\xc3\xa9 NOOP",
                     b"a\x00 NOOP"):
            self.assertEqual(tag_of(line), "*", line)


class SequenceSetTests(SynchronousTestCase):
    """RFC 3501 sequence-set, as written and as resolved against a mailbox."""

    def test_parse(self) -> None:
        """Numbers, ranges and "*" are kept as written (RFC 3501 9, "sequence-set")."""
        command = parse("a FETCH 1:*,5,9:7,* FLAGS")
        self.assertEqual(command.args[0], seq((1, None), (5, 5), (9, 7), (None, None)))

    def test_resolve_merges(self) -> None:
        """Ranges are ordered, reversed ones swapped, overlapping and adjacent ones merged."""
        self.assertEqual(seq((9, 7), (1, 3), (4, 5), (2, 2), (20, 20)).resolve(100),
                         [(1, 5), (7, 9), (20, 20)])

    def test_resolve_star(self) -> None:
        """ "*" is the largest number, and 559:* includes it when smaller (RFC 3501 6.4.8)."""
        self.assertEqual(seq((1, None)).resolve(10), [(1, 10)])
        self.assertEqual(seq((559, None)).resolve(500), [(500, 559)])
        self.assertEqual(seq((None, None), (3, 3)).resolve(7), [(3, 3), (7, 7)])

    def test_resolve_empty_mailbox(self) -> None:
        """Nothing matches in an empty mailbox."""
        self.assertEqual(seq((1, None)).resolve(0), [])

    def test_resolve_huge_range(self) -> None:
        """UID 1:4294967295 resolves to one range, without walking it (RFC 3501 9, nz-number)."""
        self.assertEqual(seq((1, 4294967295), (17, 17)).resolve(4294967295), [(1, 4294967295)])

    def test_malformed(self) -> None:
        """0, leading zeros, empty elements and numbers past 2**32-1 are not sequence sets."""
        for text in ("0", "0:5", "1:0", "01", "1,", ",1", "1::2", "1:2:3", "a", "$", "-1",
                     "4294967296", "1.5"):
            error = self.assertRaises(ParseError, parse, f"t FETCH {text} FLAGS")
            self.assertEqual(error.text, "Expected a sequence set after FETCH")
            self.assertEqual(error.tag, "t")


class SimpleCommandTests(SynchronousTestCase):
    """Commands without arguments, and ones with a single mailbox."""

    def test_no_arguments(self) -> None:
        """Commands of RFC 3501 6.1, 6.4, and RFC 3691/2177/2342 take no arguments."""
        for name in ("CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT",
                     "EXPUNGE", "IDLE", "NAMESPACE"):
            self.assertEqual(parse(f"x1 {name.lower()}"), Command("x1", name))

    def test_trailing_spaces(self) -> None:
        """Trailing spaces after a command are tolerated, as common servers do."""
        self.assertEqual(parse("a NOOP  "), Command("a", "NOOP"))

    def test_mailbox_commands(self) -> None:
        """SELECT, EXAMINE, CREATE, DELETE and (UN)SUBSCRIBE take a mailbox (RFC 3501 6.3)."""
        for name in ("SELECT", "EXAMINE", "CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE"):
            self.assertEqual(parse(f'a {name} "Sent Items"'),
                             Command("a", name, args=("Sent Items",)))

    def test_rename(self) -> None:
        """RENAME takes the old and the new name (RFC 3501 6.3.5)."""
        self.assertEqual(parse("a RENAME Old {3+}", literal(b"New"), ""),
                         Command("a", "RENAME", args=("Old", "New")))

    def test_uid_expunge(self) -> None:
        """UID EXPUNGE takes a sequence set (RFC 4315 2.1)."""
        self.assertEqual(parse("a UID EXPUNGE 3:5"),
                         Command("a", "EXPUNGE", uid=True, args=(seq((3, 5)),)))

    def test_copy_move(self) -> None:
        """COPY and MOVE (and UID ...) take a set and a mailbox (RFC 3501 6.4.7, RFC 6851 3)."""
        self.assertEqual(parse("a COPY 1:3 Trash"),
                         Command("a", "COPY", args=(seq((1, 3)), "Trash")))
        self.assertEqual(parse("a uid move 5 inbox"),
                         Command("a", "MOVE", uid=True, args=(seq((5, 5)), "INBOX")))


class MailboxNameTests(SynchronousTestCase):
    """Mailbox names: modified UTF-7 (RFC 3501 5.1.3), UTF-8 (RFC 6855 3) and INBOX."""

    def test_inbox_any_case(self) -> None:
        """INBOX is case-insensitive (RFC 3501 5.1), also as the first level of a name."""
        self.assertEqual(parse("a SELECT iNbOx").args, ("INBOX",))
        self.assertEqual(parse('a SELECT "inbox.Sub.inbox"').args, ("INBOX.Sub.inbox",))
        self.assertEqual(parse("a SELECT inboxes").args, ("inboxes",))
        self.assertEqual(parse("a SELECT Sub.inbox").args, ("Sub.inbox",))

    def test_modified_utf7(self) -> None:
        """Modified UTF-7 is decoded, "&-" being "&" (RFC 3501 5.1.3)."""
        self.assertEqual(parse("a SELECT &ZeVnLIqe-").args, ("日本語",))
        self.assertEqual(parse("a SELECT A&-B").args, ("A&B",))
        self.assertEqual(parse('a CREATE "Caf&AOk-.&2D3cAQ-"').args, ("Café.🐁",))

    def test_invalid_modified_utf7(self) -> None:
        """Bad shifts, encoded ASCII and lone surrogates are refused (RFC 3501 5.1.3)."""
        for name in ("&ZeVnLIqe", "A&B", "&AGE-", "&AOk-&AOk-", "&2D0-", "&-&", "&Jjo!-"):
            error = self.assertRaises(ParseError, parse, f'a SELECT "{name}"')
            self.assertEqual((error.tag, error.text),
                             ("a", "Invalid modified UTF-7 in a mailbox name"))

    def test_utf8_name(self) -> None:
        """An 8-bit name is taken as UTF-8, quoted or not (RFC 6855 3)."""
        self.assertEqual(parse('a SELECT "Café"').args, ("Café",))
        self.assertEqual(parse("a SELECT Café").args, ("Café",))
        error = self.assertRaises(ParseError, parse, b'a SELECT "\xff"')
        self.assertEqual(error.text, "Invalid UTF-8 in a mailbox name")

    def test_utf8_enabled(self) -> None:
        """After ENABLE UTF8=ACCEPT an ASCII name is not modified UTF-7 (RFC 6855 3)."""
        self.assertEqual(parse("a SELECT A&B", utf8=True).args, ("A&B",))
        self.assertEqual(parse("a SELECT &ZeVnLIqe-", utf8=True).args, ("&ZeVnLIqe-",))


class LoginAuthenticateTests(SynchronousTestCase):
    """LOGIN (RFC 3501 6.2.3) and AUTHENTICATE with SASL-IR (RFC 4959)."""

    def test_login_atoms_and_quoted(self) -> None:
        """Arguments are astrings; quoted strings escape only '"' and "\\" (RFC 3501 9)."""
        self.assertEqual(parse('a LOGIN bob@example.org "p a\\"s\\\\s"'),
                         Command("a", "LOGIN", args=("bob@example.org", 'p a"s\\s')))

    def test_login_literals(self) -> None:
        """A synchronizing and a LITERAL+ literal give their UTF-8 text (RFC 3501 4.3, RFC 7888)."""
        command = parse("a LOGIN {6}", literal("jösé".encode()), " {6+}", literal(b"secret"), "")
        self.assertEqual(command, Command("a", "LOGIN", args=("jösé", "secret")))

    def test_login_literal_in_file(self) -> None:
        """A literal the protocol kept in a file is read from its start."""
        data = io.BytesIO(b"secret")
        data.seek(4)
        command = parse("a LOGIN bob {6}", Literal(file=data, size=6), "")
        self.assertEqual(command.args, ("bob", "secret"))

    def test_login_utf8(self) -> None:
        """UTF-8 in quoted strings is accepted, as RFC 6855 3 clients send it."""
        self.assertEqual(parse('a LOGIN "jösé" "пароль"').args, ("jösé", "пароль"))

    def test_login_errors(self) -> None:
        """Missing, bad-escape, NUL and invalid UTF-8 arguments are refused."""
        for line, text in [
            ("a LOGIN bob", "Expected a password after LOGIN"),
            ('a LOGIN "bob', "Expected a user name after LOGIN"),
            ('a LOGIN "b\\ob" x', "Expected a user name after LOGIN"),
            (b"a LOGIN \xff x", "Invalid UTF-8 in a user name"),
            ("a LOGIN b*b x", "Expected a user name after LOGIN"),
            ("a LOGIN bob pw extra", "Too many arguments"),
        ]:
            error = self.assertRaises(ParseError, parse, line)
            self.assertEqual((error.tag, error.text), ("a", text), line)
        error = self.assertRaises(ParseError, parse, "a LOGIN {3}", literal(b"b\x00b"), " x")
        self.assertEqual(error.text, "NUL in a user name")

    def test_authenticate(self) -> None:
        """The mechanism is upper-cased; no initial response is None (RFC 3501 6.2.2)."""
        self.assertEqual(parse("a AUTHENTICATE plain"),
                         Command("a", "AUTHENTICATE", args=("PLAIN", None)))

    def test_authenticate_initial_response(self) -> None:
        """SASL-IR: base64 is decoded, "=" is an empty response (RFC 4959 3)."""
        self.assertEqual(parse("a AUTHENTICATE PLAIN AGJvYgBwdw==").args,
                         ("PLAIN", b"\x00bob\x00pw"))
        self.assertEqual(parse("a AUTHENTICATE EXTERNAL =").args, ("EXTERNAL", b""))

    def test_authenticate_invalid_base64(self) -> None:
        """An initial response that is not base64 is a syntax error (RFC 4959 3, RFC 4648)."""
        for response in ("AGJvYgBwdw", "AG!v", "a=b=", "é"):
            error = self.assertRaises(ParseError, parse, f"a AUTHENTICATE PLAIN {response}")
            self.assertEqual(error.text, "Invalid base64 in the initial response")


class ListStatusTests(SynchronousTestCase):
    """LIST and LSUB (RFC 3501 6.3.8-9, RFC 9051 6.3.9) and STATUS (RFC 3501 6.3.10)."""

    def test_list(self) -> None:
        """Reference and pattern, the pattern with its wildcards (RFC 3501 6.3.8)."""
        self.assertEqual(parse('a LIST "" %'), Command("a", "LIST", args=("", "%", (), ())))
        self.assertEqual(parse("a LIST inbox. *&ZeVnLIqe-]").args, ("INBOX.", "*日本語]", (), ()))
        self.assertEqual(parse('a LIST "" inbox').args, ("", "INBOX", (), ()))

    def test_list_extended(self) -> None:
        """Selection and return options are upper-cased and kept once (RFC 9051 6.3.9)."""
        self.assertEqual(
            parse('a LIST (special-use Subscribed special-use) "" (*) '
                  'RETURN (CHILDREN special-use)'),
            Command("a", "LIST", args=("", "*", ("SPECIAL-USE", "SUBSCRIBED"),
                                       ("CHILDREN", "SPECIAL-USE"))))
        self.assertEqual(parse('a LIST () "" * RETURN ()').args, ("", "*", (), ()))

    def test_list_extended_errors(self) -> None:
        """Unknown options and a lone RECURSIVEMATCH are BAD (RFC 9051 6.3.9, 6.3.9.1)."""
        for line, text in [
            ('a LIST (FOO) "" *', "Unsupported LIST option FOO"),
            ('a LIST "" * RETURN (STATUS (MESSAGES))', "Expected return options after LIST"),
            ('a LIST "" * RETURN (MYRIGHTS)', "Unsupported LIST option MYRIGHTS"),
            ('a LIST (RECURSIVEMATCH) "" *', "RECURSIVEMATCH needs another selection option"),
            ('a LIST "" (a b)', "Only one LIST pattern is supported"),
            ('a LIST "" * RETURNS ()', "Expected RETURN after LIST"),
            ('a LIST ""', "Expected a mailbox pattern after LIST"),
        ]:
            error = self.assertRaises(ParseError, parse, line)
            self.assertEqual(error.text, text, line)

    def test_lsub(self) -> None:
        """LSUB takes a reference and a pattern (RFC 3501 6.3.9)."""
        self.assertEqual(parse('a LSUB "" "Sent*"'), Command("a", "LSUB", args=("", "Sent*")))

    def test_status(self) -> None:
        """Status items are upper-cased and checked (RFC 3501 6.3.10)."""
        self.assertEqual(parse("a STATUS INBOX (messages UIDNEXT uidvalidity unseen recent size)"),
                         Command("a", "STATUS", args=("INBOX", (
                             "MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "RECENT", "SIZE"))))

    def test_status_errors(self) -> None:
        """Unknown, missing and unparenthesized items are refused (RFC 3501 9, "status")."""
        for line, text in [
            ("a STATUS INBOX (FOO)", "Unknown status item FOO"),
            ("a STATUS INBOX ()", "Expected a list of status items after STATUS"),
            ("a STATUS INBOX MESSAGES", "Expected a list of status items after STATUS"),
            ("a STATUS INBOX", "Expected a list of status items after STATUS"),
        ]:
            error = self.assertRaises(ParseError, parse, line)
            self.assertEqual(error.text, text, line)


class AppendTests(SynchronousTestCase):
    """APPEND (RFC 3501 6.3.11), with LITERAL+ and the UTF8 data item of RFC 6855 4."""

    def test_plain(self) -> None:
        """The message literal is passed through as the Literal object."""
        message = Literal(file=io.BytesIO(b"Subject: x\r\n\r\nhi\r\n"), size=18)
        self.assertEqual(parse("a APPEND Drafts {18}", message, ""),
                         Command("a", "APPEND", args=("Drafts", (), None, message)))

    def test_flags_and_date(self) -> None:
        """Flags are normalised and the date-time is an aware datetime (RFC 3501 9, "date-time")."""
        message = literal(b"x")
        command = parse('a APPEND inbox (\\seen $Junk \\DRAFT) " 7-Jul-1996 02:44:25 -0700" {1+}',
                        message, "")
        zone = datetime.timezone(-datetime.timedelta(hours=7))
        self.assertEqual(command.args, (
            "INBOX", ("\\Seen", "$Junk", "\\Draft"),
            datetime.datetime(1996, 7, 7, 2, 44, 25, tzinfo=zone), message))

    def test_date_only(self) -> None:
        """A date-time without flags, with a two-digit day and a positive zone."""
        command = parse('a APPEND INBOX "17-jul-1996 23:59:59 +0530" {1}', literal(b"x"), "")
        zone = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
        self.assertEqual(command.args[2], datetime.datetime(1996, 7, 17, 23, 59, 59, tzinfo=zone))

    def test_mailbox_literal(self) -> None:
        """The mailbox may be a literal too, so a command can carry two literals (RFC 3501 4.3)."""
        message = literal(b"body")
        self.assertEqual(parse("a APPEND {4}", literal(b"Sent"), " () {4}", message, "").args,
                         ("Sent", (), None, message))

    def test_utf8_data(self) -> None:
        """APPEND ... UTF8 (~{n}) carries the message as a literal8 (RFC 6855 4)."""
        message = literal(b"Subject: \xc3\xa9\r\n\r\n")
        self.assertEqual(parse("a APPEND INBOX (\\Seen) UTF8 (~{17}", message, ")").args,
                         ("INBOX", ("\\Seen",), None, message))

    def test_errors(self) -> None:
        """Missing literal, quoted message, \\Recent, bad dates and MULTIAPPEND are refused."""
        for pieces, text in [
            (["a APPEND INBOX"], "Expected a message literal after APPEND"),
            (['a APPEND INBOX "hello"'], "Expected a date-time after APPEND"),
            (["a APPEND INBOX hello"], "Expected a message literal after APPEND"),
            (["a APPEND INBOX (\\Recent) {1}", literal(b"x"), ""],
             "\\Recent cannot be set by a client"),
            (['a APPEND INBOX "31-Feb-1996 02:44:25 -0700" {1}', literal(b"x"), ""],
             "Expected a date-time after APPEND"),
            (['a APPEND INBOX "1-Feb-1996 02:44:25 0700" {1}', literal(b"x"), ""],
             "Expected a date-time after APPEND"),
            (['a APPEND INBOX "1-Foo-1996 02:44:25 +0700" {1}', literal(b"x"), ""],
             "Expected a date-time after APPEND"),
            (["a APPEND INBOX {1}", literal(b"x"), " {1}", literal(b"y"), ""],
             "Too many arguments"),
            (["a APPEND INBOX ~{1}", literal(b"x"), ""], "Expected a message literal after APPEND"),
            (["a APPEND INBOX UTF8 (~{1}", literal(b"x"), ""],
             'Expected ")" after the message literal after APPEND'),
        ]:
            error = self.assertRaises(ParseError, parse, *pieces)
            self.assertEqual((error.tag, error.text), ("a", text), pieces)


class FetchTests(SynchronousTestCase):
    """FETCH and UID FETCH (RFC 3501 6.4.5, 6.4.8)."""

    def fetch(self, items: str) -> tuple[FetchItem, ...]:
        command = parse(f"a FETCH 1 {items}")
        self.assertEqual(command.name, "FETCH")
        return command.args[1]

    def test_simple_items(self) -> None:
        """Non-section items keep their names; BODY alone is the non-extensible structure."""
        self.assertEqual(
            self.fetch("(uid flags INTERNALDATE rfc822.size ENVELOPE BODYSTRUCTURE BODY)"),
            tuple(FetchItem(name) for name in ("UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE",
                                               "ENVELOPE", "BODYSTRUCTURE", "BODY")))

    def test_single_item(self) -> None:
        """A single item needs no parentheses (RFC 3501 9, "fetch")."""
        self.assertEqual(self.fetch("FLAGS"), (FetchItem("FLAGS"),))

    def test_macros(self) -> None:
        """ALL, FAST and FULL expand as RFC 3501 6.4.5 says."""
        fast = (FetchItem("FLAGS"), FetchItem("INTERNALDATE"), FetchItem("RFC822.SIZE"))
        self.assertEqual(self.fetch("fast"), fast)
        self.assertEqual(self.fetch("ALL"), (*fast, FetchItem("ENVELOPE")))
        self.assertEqual(self.fetch("FULL"), (*fast, FetchItem("ENVELOPE"), FetchItem("BODY")))

    def test_macro_in_list(self) -> None:
        """A macro cannot be part of a list (RFC 3501 9, "fetch")."""
        error = self.assertRaises(ParseError, parse, "a FETCH 1 (FLAGS ALL)")
        self.assertEqual(error.text, "Unknown fetch item ALL")

    def test_sections(self) -> None:
        """Section specs: whole, part, HEADER, TEXT, MIME, HEADER.FIELDS[.NOT] (RFC 3501 6.4.5)."""
        command = parse("a FETCH 1 (BODY[] body.peek[1.2.header.fields (From to)]<0.100> "
                        "BODY[1.MIME] BODY[TEXT] BODY[3] BODY[HEADER.FIELDS.NOT ({6}",
                        literal(b"x-Spam"), " Date)])")
        self.assertEqual(command.args[1], (
            section(),
            section(True, (1, 2), "HEADER.FIELDS", fields=("FROM", "TO"), partial=(0, 100)),
            section(False, (1,), "MIME"),
            section(False, (), "TEXT"),
            section(False, (3,)),
            section(False, (), "HEADER.FIELDS.NOT", fields=("X-SPAM", "DATE")),
        ))

    def test_labels(self) -> None:
        """The response name drops PEEK and answers a partial with its origin (RFC 3501 7.4.2)."""
        items = self.fetch("(BODY.PEEK[1.2.HEADER.FIELDS (From To)]<5.100> BODY[] BODY[1.MIME] "
                           "BODY[HEADER] BODY[2.TEXT]<0.10> BODY[4.1])")
        self.assertEqual([item.section.label() for item in items],
                         ["BODY[1.2.HEADER.FIELDS (FROM TO)]<5>", "BODY[]", "BODY[1.MIME]",
                          "BODY[HEADER]", "BODY[2.TEXT]<0>", "BODY[4.1]"])

    def test_rfc822_items(self) -> None:
        """RFC822* items are sections with their own labels; only RFC822.HEADER peeks (6.4.5)."""
        items = self.fetch("(RFC822 RFC822.HEADER rfc822.text)")
        self.assertEqual(items, (
            section(False, (), None, label_override="RFC822"),
            section(True, (), "HEADER", label_override="RFC822.HEADER"),
            section(False, (), "TEXT", label_override="RFC822.TEXT"),
        ))
        self.assertEqual([item.section.label() for item in items],
                         ["RFC822", "RFC822.HEADER", "RFC822.TEXT"])

    def test_uid_fetch(self) -> None:
        """UID FETCH is FETCH with uid set (RFC 3501 6.4.8)."""
        self.assertEqual(parse("a UID FETCH 1:* (FLAGS)"),
                         Command("a", "FETCH", True, (seq((1, None)), (FetchItem("FLAGS"),))))

    def test_errors(self) -> None:
        """Malformed sections, partials and items are refused (RFC 3501 9, "section")."""
        for items, text in [
            ("BODY[0]", "Expected a body section after FETCH"),
            ("BODY[1..2]", "Expected a body section after FETCH"),
            ("BODY[1.]", "Expected a body section after FETCH"),
            ("BODY[MIME]", "Expected a body section after FETCH"),
            ("BODY[HEADER.FIELDS]", "Expected header field names after FETCH"),
            ("BODY[HEADER.FIELDS ()]", "Expected header field names after FETCH"),
            ("BODY[HEADER.FIELDS (a:b)]", "Expected header field names after FETCH"),
            ("BODY[FOO]", "Expected a body section after FETCH"),
            ("BODY[1", "Expected a body section after FETCH"),
            ("BODY[]<0.0>", "Expected a partial <origin.count> after FETCH"),
            ("BODY[]<5>", "Expected a partial <origin.count> after FETCH"),
            ("BODY.PEEK", "Unknown fetch item BODY.PEEK"),
            ("BINARY[1]", "Unknown fetch item BINARY"),
            ("()", "Expected fetch items after FETCH"),
            ("(FLAGS", "Expected fetch items after FETCH"),
            ("(FLAGS UID", "Expected fetch items after FETCH"),
            ("FLAGS UID", "Too many arguments"),
            ("FLAGS)", "Unexpected characters after FETCH arguments"),
        ]:
            error = self.assertRaises(ParseError, parse, f"a FETCH 1 {items}")
            self.assertEqual(error.text, text, items)


class StoreTests(SynchronousTestCase):
    """STORE and UID STORE (RFC 3501 6.4.6)."""

    def test_modes(self) -> None:
        """FLAGS, +FLAGS and -FLAGS, with .SILENT, in any case (RFC 3501 6.4.6)."""
        for action, mode, silent in [("FLAGS", "set", False), ("+flags", "add", False),
                                     ("-FLAGS.SILENT", "remove", True),
                                     ("flags.silent", "set", True)]:
            self.assertEqual(parse(f"a STORE 2:4 {action} (\\Seen)"),
                             Command("a", "STORE", args=(seq((2, 4)), mode, silent, ("\\Seen",))))

    def test_flags_without_parentheses(self) -> None:
        """Flags may be given without a list (RFC 3501 9, "store-att-flags")."""
        self.assertEqual(parse("a UID STORE 7 +FLAGS \\deleted $Forwarded").args,
                         (seq((7, 7)), "add", False, ("\\Deleted", "$Forwarded")))

    def test_empty_list(self) -> None:
        """FLAGS () clears every flag (RFC 3501 9, "flag-list")."""
        self.assertEqual(parse("a STORE 1 FLAGS ()").args, (seq((1, 1)), "set", False, ()))

    def test_errors(self) -> None:
        """\\Recent, unknown system flags and bad actions are refused (RFC 3501 2.3.2, 9)."""
        for line, text in [
            ("a STORE 1 +FLAGS \\Recent", "\\Recent cannot be set by a client"),
            ("a STORE 1 +FLAGS (\\Foo)", "Unknown system flag \\Foo"),
            ("a STORE 1 +FLAGS", "Expected flags after STORE"),
            ("a STORE 1 *FLAGS (\\Seen)", "Expected FLAGS, +FLAGS or -FLAGS after STORE"),
            ("a STORE 1 FLAGS.LOUD (\\Seen)", "Expected FLAGS, +FLAGS or -FLAGS after STORE"),
            ("a STORE 1 FLAGS (\\Seen", "Expected a flag list after STORE"),
            ("a STORE 1 FLAGS (a*b)", "Expected a flag list after STORE"),
            ("a STORE 1 FLAGS (\\Seen) x", "Too many arguments"),
        ]:
            error = self.assertRaises(ParseError, parse, line)
            self.assertEqual(error.text, text, line)


class SearchTests(SynchronousTestCase):
    """SEARCH and UID SEARCH (RFC 3501 6.4.4)."""

    def search(self, *pieces: str | Literal) -> SearchKey:
        command = parse("a SEARCH " + pieces[0], *pieces[1:])
        self.assertEqual((command.name, command.args[0]), ("SEARCH", None))
        return command.args[1]

    def test_flag_keys(self) -> None:
        """Flag keys and their UN- forms become FLAG and NOFLAG (RFC 3501 6.4.4)."""
        for name, flag in [("ANSWERED", "\\Answered"), ("DELETED", "\\Deleted"),
                           ("DRAFT", "\\Draft"), ("FLAGGED", "\\Flagged"), ("SEEN", "\\Seen")]:
            self.assertEqual(self.search(name.lower()), SearchKey("FLAG", (flag,)))
            self.assertEqual(self.search("UN" + name), SearchKey("NOFLAG", (flag,)))
        self.assertEqual(self.search("KEYWORD $Junk"), SearchKey("FLAG", ("$Junk",)))
        self.assertEqual(self.search("unkeyword $Junk"), SearchKey("NOFLAG", ("$Junk",)))

    def test_recent_new_old(self) -> None:
        """NEW is RECENT and not SEEN, OLD is NOT RECENT (RFC 3501 6.4.4)."""
        recent = SearchKey("RECENT")
        self.assertEqual(self.search("ALL"), ALL)
        self.assertEqual(self.search("RECENT"), recent)
        self.assertEqual(self.search("NEW"),
                         SearchKey("AND", (recent, SearchKey("NOFLAG", ("\\Seen",)))))
        self.assertEqual(self.search("OLD"), SearchKey("NOT", (recent,)))

    def test_header_keys(self) -> None:
        """FROM, TO, CC, BCC, SUBJECT and HEADER become HEADER with an upper-case field name."""
        for name in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
            self.assertEqual(self.search(f'{name.lower()} "a b"'),
                             SearchKey("HEADER", (name, "a b")))
        self.assertEqual(self.search('HEADER List-Id ""'), SearchKey("HEADER", ("LIST-ID", "")))

    def test_text_keys(self) -> None:
        """BODY and TEXT take a string (RFC 3501 6.4.4)."""
        self.assertEqual(self.search("BODY hello"), SearchKey("BODY", ("hello",)))
        self.assertEqual(self.search("TEXT {5+}", literal(b"hello"), ""),
                         SearchKey("TEXT", ("hello",)))

    def test_dates(self) -> None:
        """Date keys take "1-Feb-1994", "01-Feb-1994" or a quoted date (RFC 3501 9, "date")."""
        day = datetime.date(1994, 2, 1)
        for name in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
            self.assertEqual(self.search(f"{name} 1-Feb-1994"), SearchKey(name, (day,)))
        self.assertEqual(self.search("SINCE 01-feb-1994"), SearchKey("SINCE", (day,)))
        self.assertEqual(self.search('ON "1-FEB-1994"'), SearchKey("ON", (day,)))

    def test_sizes(self) -> None:
        """LARGER and SMALLER take a number (RFC 3501 6.4.4)."""
        self.assertEqual(self.search("LARGER 0"), SearchKey("LARGER", (0,)))
        self.assertEqual(self.search("SMALLER 4294967295"), SearchKey("SMALLER", (4294967295,)))

    def test_sets(self) -> None:
        """A bare sequence set and UID take sets (RFC 3501 6.4.4)."""
        self.assertEqual(self.search("1:5,*"), SearchKey("SEQ", (seq((1, 5), (None, None)),)))
        self.assertEqual(self.search("UID 3:*"), SearchKey("UID", (seq((3, None)),)))

    def test_several_keys_and_nesting(self) -> None:
        """Several keys are ANDed; parentheses group; OR and NOT take keys (RFC 3501 6.4.4)."""
        self.assertEqual(
            self.search("OR (SEEN FROM bob) NOT (DELETED) ((1:3)) UNSEEN"),
            SearchKey("AND", (
                SearchKey("OR", (SearchKey("AND", (SEEN, SearchKey("HEADER", ("FROM", "bob")))),
                                 SearchKey("NOT", (SearchKey("FLAG", ("\\Deleted",)),)))),
                SearchKey("SEQ", (seq((1, 3)),)),
                SearchKey("NOFLAG", ("\\Seen",)))))
        self.assertEqual(self.search("OR OR SEEN ALL NOT NOT ALL"),
                         SearchKey("OR", (SearchKey("OR", (SEEN, ALL)),
                                          SearchKey("NOT", (SearchKey("NOT", (ALL,)),)))))

    def test_charset(self) -> None:
        """CHARSET UTF-8 and US-ASCII are known; strings are decoded with it (RFC 3501 6.4.4)."""
        command = parse("a UID SEARCH charset utf-8 SUBJECT {6}", literal("café".encode()), "")
        self.assertEqual(command, Command("a", "SEARCH", True, (
            "UTF-8", SearchKey("HEADER", ("SUBJECT", "café")))))
        self.assertEqual(parse('a SEARCH CHARSET "US-ASCII" TEXT x').args,
                         ("US-ASCII", SearchKey("TEXT", ("x",))))
        error = self.assertRaises(ParseError, parse, "a SEARCH CHARSET US-ASCII TEXT café")
        self.assertEqual(error.text, "Invalid ASCII in an argument to TEXT")

    def test_utf8_without_charset(self) -> None:
        """Without CHARSET strings are UTF-8, as RFC 6855 3 clients send them."""
        self.assertEqual(parse('a SEARCH SUBJECT "café"').args,
                         (None, SearchKey("HEADER", ("SUBJECT", "café"))))

    def test_bad_charset(self) -> None:
        """An unknown charset is BadCharset, for a NO [BADCHARSET] reply (RFC 3501 6.4.4, 7.1)."""
        error = self.assertRaises(BadCharset, parse, "t SEARCH CHARSET KOI8-R ALL")
        self.assertEqual((error.tag, error.text), ("t", "Unsupported charset KOI8-R"))

    def test_nesting_limit(self) -> None:
        """Deep nesting is refused, not recursed into (RFC 3501 9 sets no limit; we do)."""
        self.assertEqual(self.search("(" * 50 + "ALL" + ")" * 50), ALL)
        for key in ("(" * 200 + "ALL" + ")" * 200, "NOT " * 200 + "ALL", "OR ALL " * 200 + "ALL"):
            error = self.assertRaises(ParseError, parse, "a SEARCH " + key)
            self.assertEqual(error.text, "Search keys nested too deeply")

    def test_errors(self) -> None:
        """Malformed keys and arguments are refused with the tag kept (RFC 3501 9)."""
        for keys, text in [
            ("", "Expected a search key after SEARCH"),
            ("FOO", "Unknown search key FOO"),
            ("SINCE 1-Foo-1994", "Expected a date after SEARCH"),
            ("SINCE 30-Feb-1994", "Expected a date after SEARCH"),
            ("SINCE 1994-02-01", "Expected a date after SEARCH"),
            ("SINCE 1-Feb-1994x", "Expected a date after SEARCH"),
            ("LARGER x", "Expected a number after SEARCH"),
            ("LARGER 4294967296", "Expected a number after SEARCH"),
            ("UID 0", "Expected a sequence set after SEARCH"),
            ("1:x", "Expected a sequence set after SEARCH"),
            ("(SEEN", "Expected a search key after SEARCH"),
            ("SEEN)", "Expected a search key after SEARCH"),
            ("()", "Expected a search key after SEARCH"),
            ("OR SEEN", "Expected a search key after SEARCH"),
            ("KEYWORD \\Seen", "Expected an argument to KEYWORD after SEARCH"),
            ("HEADER Subject", "Expected an argument to HEADER after SEARCH"),
            ("SUBJECT", "Expected an argument to SUBJECT after SEARCH"),
            ("CHARSET", "Unknown search key CHARSET"),
        ]:
            error = self.assertRaises(ParseError, parse, f"s1 SEARCH {keys}")
            self.assertEqual((type(error), error.tag, error.text), (ParseError, "s1", text), keys)


class IdEnableTests(SynchronousTestCase):
    """ID (RFC 2971) and ENABLE (RFC 5161)."""

    def test_id(self) -> None:
        """ID takes NIL or a list of string pairs whose values may be NIL (RFC 2971 3.1)."""
        self.assertEqual(parse("a ID nil"), Command("a", "ID", args=(None,)))
        self.assertEqual(parse('a ID ("name" "Mail" "version" NIL "os" {5}', literal(b"Linux"),
                               ")").args,
                         ({"name": "Mail", "version": None, "os": "Linux"},))
        self.assertEqual(parse("a ID ()").args, ({},))

    def test_id_errors(self) -> None:
        """Atoms as fields, odd lists and a missing list are refused (RFC 2971 4)."""
        for line in ("a ID", 'a ID (name "x")', 'a ID ("name")', 'a ID ("name" "x"',
                     'a ID ("a" "b""c" "d")', "a ID foo"):
            error = self.assertRaises(ParseError, parse, line)
            self.assertEqual(error.tag, "a", line)

    def test_enable(self) -> None:
        """ENABLE takes one or more capability names, upper-cased (RFC 5161 3.1)."""
        self.assertEqual(parse("a ENABLE utf8=accept CONDSTORE"),
                         Command("a", "ENABLE", args=(("UTF8=ACCEPT", "CONDSTORE"),)))
        error = self.assertRaises(ParseError, parse, "a ENABLE")
        self.assertEqual(error.text, "Expected a capability name after ENABLE")


class ErrorTests(SynchronousTestCase):
    """Malformed commands: always ParseError, with the tag when there is one (RFC 3501 7.1.3)."""

    def test_malformed_commands(self) -> None:
        """A dozen malformed commands each give their own message and keep their tag."""
        for pieces, tag, text in [
            ([""], "*", "Expected a tag"),
            (["+ NOOP"], "*", "Expected a tag"),
            (["a(b NOOP"], "*", "Expected a tag"),
            (["a"], "a", "Expected a command name after the tag"),
            (["a "], "a", "Expected a command name after the tag"),
            (["a FOO"], "a", "Unknown command FOO"),
            (["a UID"], "a", "Expected a command after UID"),
            (["a UID LOGIN x y"], "a", "Unknown command UID LOGIN"),
            (["a NOOP now"], "a", "Too many arguments"),
            (["a NOOP("], "a", "Unexpected characters after NOOP arguments"),
            (["a SELECT"], "a", "Expected a mailbox name after SELECT"),
            (['a SELECT "x" y'], "a", "Too many arguments"),
            (["a COPY 1:2"], "a", "Expected a mailbox name after COPY"),
            (["a FETCH 1:2 FLAGS {1}", literal(b"x"), ""], "a", "Too many arguments"),
            (["a SELECT {3}"], "a", "Expected a mailbox name after SELECT"),
            (["a LOGIN a", literal(b"x"), ""], "a", "Expected a password after LOGIN"),
            (["a LOGIN a {1}", literal(b"x")], "a", "Malformed command framing"),
            ([literal(b"x")], "*", "Malformed command framing"),
        ]:
            error = self.assertRaises(ParseError, parse, *pieces)
            self.assertEqual((type(error), error.tag, error.text), (ParseError, tag, text), pieces)

    def test_fuzz(self) -> None:
        """Mutated and random command lines raise nothing but ParseError (RFC 3501 7.1.3: BAD)."""
        seeds = [
            'a FETCH 1:*,5 (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From To)]<0.100> RFC822.HEADER)',
            "a SEARCH CHARSET utf-8 OR (FROM bob SINCE 1-Feb-1994) NOT NEW 1:5 UID 3:* LARGER 5",
            'a APPEND inbox (\\Seen) " 7-Jul-1996 02:44:25 -0700" {3}',
            'a LIST (SPECIAL-USE) "" * RETURN (CHILDREN)',
            "a STORE 1:3 +FLAGS.SILENT (\\Seen foo)", 'a ID ("name" "x" "version" NIL)',
            "a AUTHENTICATE PLAIN AGJvYgBwdw==", "a STATUS &ZeVnLIqe- (MESSAGES UNSEEN)",
            "a UID EXPUNGE 1:5", "a LOGIN {3}", "a ENABLE X Y", "a RENAME a b",
            "a APPEND x UTF8 (~{3}", 'a SEARCH SENTON "1-Feb-1994" KEYWORD $x',
        ]
        alphabet = (b' ()[]<>{}"\\*%+-.:,0123456789ABCDEFHILMNOPRSTUVXYZaez&=~'
                    b"\x00\x01\x7f\x80\xc3\xff")
        rng = random.Random(3501)
        outcomes = set()
        for _ in range(5000):
            line = bytearray(rng.choice(seeds).encode())
            for _ in range(rng.randint(1, 4)):
                position = rng.randint(0, len(line))
                if rng.random() < 0.4 and line:
                    del line[min(position, len(line) - 1)]
                else:
                    line[position:position] = bytes([rng.choice(alphabet)])
            if rng.random() < 0.2:
                line = bytearray(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
            pieces: list[bytes | Literal] = [bytes(line)]
            if rng.random() < 0.3:
                pieces += [literal(bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 5)))),
                           rng.choice([b"", b" x", b")", b" {2}"])]
            self.assertIsInstance(tag_of(bytes(line)), str)
            for function, argument in [(literal_at_end, bytes(line)), (parse_command, pieces)]:
                try:
                    function(argument)
                    outcomes.add(function.__name__)
                except ParseError:
                    outcomes.add("ParseError")
        # Both outcomes occurred, so the mutations were neither all fatal nor all harmless.
        self.assertEqual(outcomes, {"literal_at_end", "parse_command", "ParseError"})
