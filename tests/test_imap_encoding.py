"""
Tests for L{mailsrv.imap.encoding}: IMAP wire forms of strings, names,
flags and dates (RFC 3501 4, 9), ENVELOPE and BODYSTRUCTURE (RFC 3501
7.4.2) and the sources of BODY[section] answers (RFC 3501 6.4.5).
Expectations follow the RFC examples and Dovecot's answers.
"""

from calendar import timegm

from twisted.trial.unittest import SynchronousTestCase

from mailsrv.imap.encoding import (
    Span,
    apply_partial,
    astring,
    body_structure,
    envelope,
    flag_list,
    internal_date,
    locate,
    mailbox,
    nstring,
    string,
)
from mailsrv.imap.parser import BodySection
from mailsrv.store.summary import PartOutline, outline

#: The message of RFC 3501 section 8, shortened.
RFC_EXAMPLE = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
    b"From: Terry Gray <gray@cac.washington.edu>\r\n"
    b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
    b"To: imap@cac.washington.edu\r\n"
    b"cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\r\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
    b"Minutes of the meeting.\r\n"
    b"See you.\r\n"
)

MIXED = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"subject: Report\r\n"
    b" for July\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"X-Folded: one\r\n"
    b"\ttwo\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="Outer-BOUNDARY"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--Outer-BOUNDARY\r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=UTF-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"<p>Hello Bob.</p>\r\n"
    b"--inner--\r\n"
    b"--Outer-BOUNDARY\r\n"
    b'Content-Type: application/pdf; name="Report.PDF"\r\n'
    b"Content-Transfer-Encoding: BASE64\r\n"
    b'Content-Disposition: attachment; filename="Report.PDF"\r\n'
    b"Content-ID: <pdf@example.org>\r\n"
    b"Content-Description: The report\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--Outer-BOUNDARY\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: carol@example.com\r\n"
    b"Subject: =?UTF-8?Q?Caf=C3=A9?=\r\n"
    b"\r\n"
    b"Forwarded body\r\n"
    b"--Outer-BOUNDARY--\r\n"
    b"epilogue\r\n"
)

#: The inner message's ENVELOPE in MIXED.
INNER_ENVELOPE = (
    b'(NIL "=?UTF-8?Q?Caf=C3=A9?=" ((NIL NIL "carol" "example.com"))'
    b' ((NIL NIL "carol" "example.com")) ((NIL NIL "carol" "example.com"))'
    b" NIL NIL NIL NIL NIL)")


def fetch(part=(), text=None, fields=()) -> BodySection:
    return BodySection(peek=True, part=part, text=text, fields=fields)


class StringTests(SynchronousTestCase):
    def test_atom(self):
        """
        An astring that is a valid atom goes as one (RFC 3501 9, ASTRING-CHAR).
        """
        self.assertEqual(astring("INBOX"), b"INBOX")
        self.assertEqual(astring("Lists.a-b_c&d"), b"Lists.a-b_c&d")

    def test_quotedWhenNotAnAtom(self):
        """
        Spaces, atom-specials, the empty string and NIL itself (RFC 3501 4.5)
        need quotes.
        """
        for value in ("Sent Items", "a(b", "50%", "a*", "x]", "{1}", ""):
            self.assertEqual(astring(value), b'"' + value.encode() + b'"')
        self.assertEqual(astring("NIL"), b'"NIL"')
        self.assertEqual(astring("nil"), b'"nil"')

    def test_quotedSpecialsEscaped(self):
        """
        Double quote and backslash are escaped in a quoted string (RFC 3501 9,
        QUOTED-CHAR).
        """
        self.assertEqual(string('say "hi" \\o/'), b'"say \\"hi\\" \\\\o/"')
        self.assertEqual(astring("a\\b"), b'"a\\\\b"')

    def test_stringIsNeverAnAtom(self):
        """
        Where the grammar says string (RFC 3501 9), an atom is not one.
        """
        self.assertEqual(string("INBOX"), b'"INBOX"')
        self.assertEqual(string(b"7bit"), b'"7bit"')

    def test_literalForLineBreaksAndNul(self):
        """
        CR, LF and NUL cannot be quoted (RFC 3501 9, TEXT-CHAR), so they go
        as a literal (RFC 3501 4.3).
        """
        self.assertEqual(string("a\r\nb"), b"{4}\r\na\r\nb")
        self.assertEqual(string("a\nb"), b"{3}\r\na\nb")
        self.assertEqual(string("a\rb"), b"{3}\r\na\rb")
        self.assertEqual(astring("a\0b"), b"{3}\r\na\0b")

    def test_literalFor8bit(self):
        """
        8-bit data goes as a literal (RFC 3501 4.3) unless the client enabled
        UTF8=ACCEPT and it is UTF-8 (RFC 6855 3).
        """
        self.assertEqual(string("Café"), b"{5}\r\nCaf\xc3\xa9")
        self.assertEqual(string("Café", utf8=True), b'"Caf\xc3\xa9"')
        self.assertEqual(string(b"\xff", utf8=True), b"{1}\r\n\xff")

    def test_literalWhenLong(self):
        """
        Long strings go as literals, which clients read in one piece.
        """
        self.assertEqual(string("x" * 999), b'"' + b"x" * 999 + b'"')
        self.assertEqual(string("x" * 1000), b"{1000}\r\n" + b"x" * 1000)

    def test_nstring(self):
        """
        None is NIL, distinct from the empty string (RFC 3501 4.5).
        """
        self.assertEqual(nstring(None), b"NIL")
        self.assertEqual(nstring(""), b'""')

    def test_escapedBytesComeBack(self):
        """
        A str decoded with surrogateescape is sent as the bytes it came from.
        """
        self.assertEqual(string(b"\xe9t\xe9".decode("utf-8", "surrogateescape")),
                         b"{3}\r\n\xe9t\xe9")


class MailboxTests(SynchronousTestCase):
    def test_modifiedUtf7(self):
        """
        Names are sent in modified UTF-7 with "&" escaped as "&-" (RFC 3501
        5.1.3), including the RFC's own example.
        """
        self.assertEqual(mailbox("INBOX"), b"INBOX")
        self.assertEqual(mailbox("Café"), b"Caf&AOk-")
        self.assertEqual(mailbox("R&D"), b"R&-D")
        self.assertEqual(mailbox("~peter/mail/台北/日本語"),
                         b"~peter/mail/&U,BTFw-/&ZeVnLIqe-")

    def test_quotedName(self):
        """
        A name that is not an atom is quoted (RFC 3501 9, mailbox is astring).
        """
        self.assertEqual(mailbox("Sent Items"), b'"Sent Items"')
        self.assertEqual(mailbox("Crème brûlée"), b'"Cr&AOg-me br&APs-l&AOk-e"')

    def test_utf8(self):
        """
        After ENABLE UTF8=ACCEPT names are sent as UTF-8 (RFC 6855 3).
        """
        self.assertEqual(mailbox("Café", utf8=True), b'"Caf\xc3\xa9"')
        self.assertEqual(mailbox("R&D", utf8=True), b"R&D")


class FlagListTests(SynchronousTestCase):
    def test_order(self):
        """
        System flags come first in RFC 3501 2.3.2 order, then keywords sorted.
        """
        self.assertEqual(flag_list(["$Label1", "\\Flagged", "Junk", "\\Seen", "\\Recent",
                                    "\\Answered", "\\Draft", "\\Deleted"]),
                         b"(\\Seen \\Answered \\Flagged \\Deleted \\Draft \\Recent $Label1 Junk)")

    def test_emptyAndDuplicates(self):
        """
        No flags is an empty list (RFC 3501 7.4.2 FLAGS); a flag shows once.
        """
        self.assertEqual(flag_list([]), b"()")
        self.assertEqual(flag_list(["\\Seen", "\\Seen"]), b"(\\Seen)")

    def test_invalidFlagLeftOut(self):
        """
        A flag that is no atom (RFC 3501 9, flag-keyword) cannot be sent.
        """
        self.assertEqual(flag_list(["bad flag", "\\", "caf\u00e9", "ok"]), b"(ok)")

    def test_anyIterable(self):
        """
        Sets, lists and one-shot iterators of the same flags give the same
        list, however often asked.
        """
        flags = ["Junk", "\\Seen"]
        for value in (frozenset(flags), frozenset(flags), set(flags), flags, iter(flags),
                      (flag for flag in flags)):
            self.assertEqual(flag_list(value), b"(\\Seen Junk)")


class InternalDateTests(SynchronousTestCase):
    def test_format(self):
        """
        INTERNALDATE is a quoted date-time in UTC (RFC 3501 9).
        """
        when = timegm((1996, 7, 17, 9, 44, 25))
        self.assertEqual(internal_date(when), b'"17-Jul-1996 09:44:25 +0000"')
        self.assertEqual(internal_date(when + 0.9), b'"17-Jul-1996 09:44:25 +0000"')

    def test_singleDigitDay(self):
        """
        A day below 10 is padded with a space (RFC 3501 9, date-day-fixed).
        """
        self.assertEqual(internal_date(timegm((2024, 2, 3, 4, 5, 6))),
                         b'" 3-Feb-2024 04:05:06 +0000"')


class EnvelopeTests(SynchronousTestCase):
    def test_rfcExample(self):
        """
        The ENVELOPE of RFC 3501 section 8's example, byte for byte; Sender
        and Reply-To default to From (RFC 3501 7.4.2).
        """
        self.assertEqual(envelope(outline(RFC_EXAMPLE).header), (
            b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes"'
            b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
            b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
            b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
            b' ((NIL NIL "imap" "cac.washington.edu"))'
            b' ((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU"))'
            b' NIL NIL "<B27397-0100000@cac.washington.edu>")'))

    def test_allFields(self):
        """
        Each field lands in its place (RFC 3501 7.4.2), the first of repeated
        ones counts, and values are unfolded (RFC 5322 2.2.3).
        """
        header = (b"Message-ID: <msg@id>\r\nIn-Reply-To: <reply@to.id>\r\n"
                  b"Date: Thu, 15 Feb 2007 01:02:03 +0200\r\nSubject: subject\r\n header\r\n"
                  b"Subject: second\r\nFrom: From Real <fromuser@fromdomain.org>\r\n"
                  b"To: To Real <touser@todomain.org>\r\nCc: Cc Real <ccuser@ccdomain.org>\r\n"
                  b"Bcc: Bcc Real <bccuser@bccdomain.org>\r\n"
                  b"Sender: Sender Real <senderuser@senderdomain.org>\r\n"
                  b"Reply-To: ReplyTo Real <replytouser@replytodomain.org>\r\n\r\n")
        self.assertEqual(envelope(header), (
            b'("Thu, 15 Feb 2007 01:02:03 +0200" "subject header"'
            b' (("From Real" NIL "fromuser" "fromdomain.org"))'
            b' (("Sender Real" NIL "senderuser" "senderdomain.org"))'
            b' (("ReplyTo Real" NIL "replytouser" "replytodomain.org"))'
            b' (("To Real" NIL "touser" "todomain.org"))'
            b' (("Cc Real" NIL "ccuser" "ccdomain.org"))'
            b' (("Bcc Real" NIL "bccuser" "bccdomain.org"))'
            b' "<reply@to.id>" "<msg@id>")'))

    def test_groups(self):
        """
        Groups are start and end markers with host NIL (RFC 3501 7.4.2), as
        Dovecot sends them; a comment names an address that has no phrase.
        """
        header = (b"From: user@domain (Real Name)\r\n"
                  b"To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\r\n"
                  b"Cc: group:;, group2: (foo) ;\r\n"
                  b"Bcc: Undisclosed recipients:\r\n\r\n")
        self.assertEqual(envelope(header), (
            b'(NIL NIL (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain"))'
            b' (("Real Name" NIL "user" "domain"))'
            b' ((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")(NIL NIL "g2" "d2.org")'
            b'(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL "g3" "d3.org")(NIL NIL NIL NIL))'
            b' ((NIL NIL "group" NIL)(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL NIL NIL))'
            b' ((NIL NIL "Undisclosed recipients" NIL)(NIL NIL NIL NIL)) NIL NIL)'))

    def test_encodedWordsUntouched(self):
        """
        Encoded words are sent as written (RFC 3501 7.4.2); quotes around a
        display name are removed and its escapes undone (RFC 5322 3.2.4).
        """
        header = (b"Subject: =?UTF-8?B?w6l0w6k=?= news\r\n"
                  b"From: =?ISO-8859-1?Q?J=F6rg?= <j@example.de>,"
                  b' "Doe, \\"Jim\\"" <jim@example.com>\r\n\r\n')
        self.assertEqual(envelope(header).split(b" ((")[0:2], [
            b'(NIL "=?UTF-8?B?w6l0w6k=?= news"',
            b'"=?ISO-8859-1?Q?J=F6rg?=" NIL "j" "example.de")("Doe, \\"Jim\\"" NIL "jim"'
            b' "example.com"))'])

    def test_missingFields(self):
        """
        Absent fields are NIL; empty ones are "" or, for addresses, NIL; an
        empty Sender or Reply-To defaults to From (RFC 3501 7.4.2).
        """
        header = b"From: a@example.org\r\nSubject:\r\nSender: \r\nReply-To:\r\nTo: ,\r\n\r\n"
        self.assertEqual(envelope(header), (
            b'(NIL "" ((NIL NIL "a" "example.org")) ((NIL NIL "a" "example.org"))'
            b' ((NIL NIL "a" "example.org")) NIL NIL NIL NIL NIL)'))
        self.assertEqual(envelope(b"\r\n"), b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)")

    def test_quotedStringsAndComments(self):
        """
        Escaped quotes and backslashes in a quoted display name are undone
        (RFC 5322 3.2.4) and escaped again on the wire (RFC 3501 9); a
        comment naming an address may nest and escape (RFC 5322 3.2.2); an
        unterminated quoted string ends with the field, backslash and all.
        """
        header = (b'From: "Doe \\"J\\" \\\\ x" <j@example.com>\r\n'
                  b"To: a@b (Real (nick) Name), c@d (x\\)y)\r\n"
                  b'Cc: "open\\\r\n\r\n')
        self.assertEqual(envelope(header), (
            b'(NIL NIL (("Doe \\"J\\" \\\\ x" NIL "j" "example.com"))'
            b' (("Doe \\"J\\" \\\\ x" NIL "j" "example.com"))'
            b' (("Doe \\"J\\" \\\\ x" NIL "j" "example.com"))'
            b' (("Real (nick) Name" NIL "a" "b")("x)y" NIL "c" "d"))'
            b' ((NIL NIL "open\\\\" "")) NIL NIL NIL)'))

    def test_spacingAndLongParts(self):
        """
        White space between the words of a display name is one space, and
        none is needed before "<" or after ","; a part too long to quote
        goes as a literal (RFC 3501 4.3).
        """
        header = b"From: Name<a@b>, Two  Spaces <c@d>,e@f,<g@h>\r\n\r\n"
        self.assertIn(b' (("Name" NIL "a" "b")("Two Spaces" NIL "c" "d")(NIL NIL "e" "f")'
                      b'(NIL NIL "g" "h")) ', envelope(header))
        header = b"From: " + b"x" * 1000 + b"@example.com, Al <al@example.com>\r\n\r\n"
        self.assertIn(b" ((NIL NIL {1000}\r\n" + b"x" * 1000 + b' "example.com")'
                      b'("Al" NIL "al" "example.com")) ', envelope(header))

    def test_literalsAndRoutes(self):
        """
        A domain literal is a host as written; a route of several domains is
        the adl (RFC 5322 3.4.1, RFC 3501 7.4.2); an address list may mix
        them with a group.
        """
        header = b"To: <@x,@y:a@b>, u@[1.2.3.4], g: b@c, d@e;, (only a comment)\r\n\r\n"
        self.assertIn(b' ((NIL "@x,@y" "a" "b")(NIL NIL "u" "[1.2.3.4]")(NIL NIL "g" NIL)'
                      b'(NIL NIL "b" "c")(NIL NIL "d" "e")(NIL NIL NIL NIL)) ', envelope(header))

    def test_whichFieldCounts(self):
        """
        Field names match in any case, and the first field of a name counts;
        a name may be followed by white space before its colon, and a value
        may start on a continuation line (RFC 5322 2.2.3, 3.6); fields end at
        the empty line, and bare LF ends lines too.  A first line starting
        with white space and a line without colon are no field.
        """
        header = (b"FROM: first@example.com\r\nFrom: second@example.com\r\n"
                  b"subject :\r\n  folded\r\n\r\nTo: body@example.com\r\n")
        self.assertEqual(envelope(header), (
            b'(NIL "folded" ((NIL NIL "first" "example.com")) ((NIL NIL "first" "example.com"))'
            b' ((NIL NIL "first" "example.com")) NIL NIL NIL NIL NIL)'))
        self.assertEqual(envelope(b"Subject: bare\n lf\nFrom: x@y\n\n"), (
            b'(NIL "bare lf" ((NIL NIL "x" "y")) ((NIL NIL "x" "y")) ((NIL NIL "x" "y"))'
            b" NIL NIL NIL NIL NIL)"))
        self.assertEqual(envelope(b" From: leading@space\r\nX-No-Colon\r\nTo: t@u\r\n\r\n"),
                         b'(NIL NIL NIL NIL NIL ((NIL NIL "t" "u")) NIL NIL NIL NIL)')

    def test_routeAndMissingDomain(self):
        """
        A source route is the adl (RFC 3501 7.4.2, as Dovecot shows it); an
        address without a domain gets host "", since NIL would mark a group.
        """
        header = b"To: <@route:user@domain>, postmaster, Bob <bob>\r\n\r\n"
        self.assertIn(b' ((NIL "@route" "user" "domain")(NIL NIL "postmaster" "")'
                      b'("Bob" NIL "bob" "")) ', envelope(header))

    def test_8bitAndGarbage(self):
        """
        Raw 8-bit headers (RFC 6532) and broken address syntax give an answer
        made of literals and best guesses, never an exception.
        """
        header = (b"Subject: \xe9t\xe9 \xff\r\nFrom: J\xc3\xb6rg <j\xc3\xb6rg@b\xfccher.de>\r\n"
                  b'To: <<<>>>,,;;::"\\\r\nCc: ((((\r\nBcc: a@b@c, "unterminated\r\n\r\n')
        result = envelope(header)
        self.assertTrue(result.startswith(b"(NIL {5}\r\n\xe9t\xe9 \xff ("
                                          b"({5}\r\nJ\xc3\xb6rg NIL {5}\r\nj\xc3\xb6rg "
                                          b"{9}\r\nb\xfccher.de)) "))
        self.assertIn(b" NIL ((NIL NIL \"a\" \"b@c\")(NIL NIL \"unterminated\" \"\")) NIL NIL)",
                      result)


class BodyStructureTests(SynchronousTestCase):
    def test_textPlain(self):
        """
        A text part has type, parameters, id, description, encoding, size and
        lines (RFC 3501 7.4.2, example in section 8), and the extension data
        only in BODYSTRUCTURE; tokens are lower-case, values as written.
        """
        part = outline(RFC_EXAMPLE)
        self.assertEqual(body_structure(part, False),
                         b'("text" "plain" ("charset" "US-ASCII") NIL NIL "7bit" 35 2)')
        self.assertEqual(body_structure(part, True),
                         b'("text" "plain" ("charset" "US-ASCII") NIL NIL "7bit" 35 2'
                         b" NIL NIL NIL NIL)")

    def test_missingContentType(self):
        """
        Without Content-Type a part is text/plain in US-ASCII (RFC 2045 5.2).
        """
        part = outline(b"Subject: x\r\n\r\nbody\r\n")
        self.assertEqual(body_structure(part, True),
                         b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1'
                         b" NIL NIL NIL NIL)")

    def test_mixed(self):
        """
        A multipart lists its children then its subtype (RFC 3501 7.4.2); a
        nested alternative, a base64 attachment with its disposition and a
        message/rfc822 part with envelope, structure and lines are all there.
        """
        alternative = (b'(("text" "plain" ("charset" "UTF-8" "format" "flowed") NIL NIL "7bit"'
                       b' 10 1 NIL NIL NIL NIL)'
                       b'("text" "html" ("charset" "UTF-8") NIL NIL "quoted-printable"'
                       b' 17 1 NIL NIL NIL NIL) "alternative" ("boundary" "inner") NIL NIL NIL)')
        pdf = (b'("application" "pdf" ("name" "Report.PDF") "<pdf@example.org>" "The report"'
               b' "base64" 12 NIL ("attachment" ("filename" "Report.PDF")) NIL NIL)')
        attached = (b'("message" "rfc822" NIL NIL NIL "7bit" 73 ' + INNER_ENVELOPE
                    + b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 1'
                    b" NIL NIL NIL NIL) 4 NIL NIL NIL NIL)")
        self.assertEqual(body_structure(outline(MIXED), True),
                         b"(" + alternative + pdf + attached
                         + b' "mixed" ("boundary" "Outer-BOUNDARY") NIL NIL NIL)')

    def test_mixedBody(self):
        """
        BODY is BODYSTRUCTURE without extension data, at every level (RFC
        3501 7.4.2).
        """
        self.assertEqual(body_structure(outline(MIXED), False), (
            b'((("text" "plain" ("charset" "UTF-8" "format" "flowed") NIL NIL "7bit" 10 1)'
            b'("text" "html" ("charset" "UTF-8") NIL NIL "quoted-printable" 17 1) "alternative")'
            b'("application" "pdf" ("name" "Report.PDF") "<pdf@example.org>" "The report"'
            b' "base64" 12)("message" "rfc822" NIL NIL NIL "7bit" 73 ' + INNER_ENVELOPE
            + b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 1) 4) "mixed")'))

    def test_parameters(self):
        """
        Parameter values keep their case and quoted semicolons, a parameter
        without value is dropped, and the rest of the extension data is
        read (RFC 2045 5.1, RFC 2183, RFC 3282, RFC 2557).
        """
        data = (b"Content-Type: Text/X-Mine; Name=\"a;B\"; flowed; CharSet=ISO-8859-1 (latin)\r\n"
                b"Content-Disposition: INLINE\r\nContent-Language: en, de-CH\r\n"
                b"Content-Location: http://example.com/x\r\n"
                b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n\r\nx")
        self.assertEqual(body_structure(outline(data), True),
                         b'("text" "x-mine" ("name" "a;B" "charset" "ISO-8859-1") NIL NIL "7bit"'
                         b' 1 1 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("inline" NIL) ("en" "de-CH")'
                         b' "http://example.com/x")')

    def test_rfc2231(self):
        """
        RFC 2231 continuations are joined; a charset-encoded value stays
        encoded under "name*" for the client to decode.
        """
        data = (b"Content-Type: application/octet-stream\r\n"
                b"Content-Disposition: attachment; filename*0*=utf-8''Caf%C3%A9;\r\n"
                b' filename*1=" menu.pdf"; title*0="Long "; title*1="Title"\r\n\r\nx')
        self.assertIn(b' ("attachment" ("filename*" "utf-8\'\'Caf%C3%A9%20menu.pdf"'
                      b' "title" "Long Title")) ',
                      body_structure(outline(data), True))

    def test_quotedParameters(self):
        """
        Semicolons and escaped quotes inside quoted values and comments do
        not split parameters (RFC 2045 5.1); a comment after a value is
        dropped, and an unterminated quoted value ends with the field.
        """
        data = (b'Content-Type: text/plain; name="a\\"b;c" (x;(y;)z); charset=x\r\n'
                b'Content-Disposition: attachment; filename="unterminated\\\r\n\r\nx')
        self.assertEqual(body_structure(outline(data), True),
                         b'("text" "plain" ("name" "a\\"b;c" "charset" "x") NIL NIL "7bit" 1 1'
                         b' NIL ("attachment" ("filename" "unterminated\\\\")) NIL NIL)')

    def test_spacesAndComments(self):
        """
        White space and comments around the type, names and values of MIME
        fields do not count (RFC 2045 5.1, 6.1).
        """
        data = (b'Content-Type: Text/Plain (comment) ; charset = "utf-8" ; format=flowed\r\n'
                b"Content-Transfer-Encoding: Base64 (x)\r\n\r\nx")
        self.assertEqual(body_structure(outline(data), False),
                         b'("text" "plain" ("charset" "utf-8" "format" "flowed") NIL NIL "base64"'
                         b" 1 1)")

    def test_multipartWithoutParts(self):
        """
        A multipart the outline could not split (no boundary, RFC 2046 5.1.1)
        is text/plain, so that part 1 is its body as for any single part.
        """
        data = b"Content-Type: multipart/mixed\r\n\r\nno parts\r\n"
        self.assertEqual(body_structure(outline(data), False),
                         b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 1)')

    def test_invalidEncoding(self):
        """
        A Content-Transfer-Encoding that is no token counts as 7bit (RFC 2045
        6.1), as Dovecot does.
        """
        data = b"Content-Type: image/png\r\nContent-Transfer-Encoding: ?invalid\r\n\r\nx"
        self.assertEqual(body_structure(outline(data), False),
                         b'("image" "png" NIL NIL NIL "7bit" 1)')

    def test_digest(self):
        """
        Parts of a multipart/digest are messages by default (RFC 2046 5.1.5).
        """
        data = (b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n"
                b"Subject: one\r\n\r\nbody\r\n--d--\r\n")
        self.assertTrue(body_structure(outline(data), False).startswith(
            b'(("message" "rfc822" NIL NIL NIL "7bit" 20 (NIL "one" NIL NIL NIL'))


class LocateTests(SynchronousTestCase):
    def setUp(self):
        self.outline = outline(MIXED)

    def content(self, part=(), text=None, fields=()):
        found = locate(self.outline, fetch(part, text, fields))
        if isinstance(found, Span):
            return MIXED[found.offset:found.offset + found.length]
        return found

    def test_wholeMessage(self):
        """
        BODY[] is the whole message (RFC 3501 6.4.5).
        """
        self.assertEqual(locate(self.outline, fetch()), Span(0, len(MIXED)))

    def test_header(self):
        """
        BODY[HEADER] is the header with its blank line, from the outline
        (RFC 3501 6.4.5).
        """
        self.assertEqual(self.content(text="HEADER"), MIXED[:MIXED.index(b"\r\n\r\n") + 4])

    def test_headerFields(self):
        """
        HEADER.FIELDS matches names case-insensitively and keeps the lines'
        folding, in message order, plus the blank line (RFC 3501 6.4.5).
        """
        self.assertEqual(self.content(text="HEADER.FIELDS", fields=("X-FOLDED", "SUBJECT", "NONE")),
                         b"subject: Report\r\n for July\r\nX-Folded: one\r\n\ttwo\r\n\r\n")
        self.assertEqual(self.content(text="HEADER.FIELDS", fields=("NONE",)), b"\r\n")

    def test_headerFieldsAsWritten(self):
        """
        HEADER.FIELDS takes the fields before the empty line, however their
        lines end, with white space before a colon (RFC 3501 6.4.5).
        """
        header = b"Subject : a\nX: b\n\tc\n\nSubject: body\n"
        part = PartOutline(header, len(header), 0, 0)
        self.assertEqual(locate(part, fetch(text="HEADER.FIELDS", fields=("SUBJECT", "X"))),
                         b"Subject : a\nX: b\n\tc\n\r\n")
        self.assertEqual(locate(part, fetch(text="HEADER.FIELDS.NOT", fields=("SUBJECT",))),
                         b"X: b\n\tc\n\r\n")

    def test_headerFieldsNot(self):
        """
        HEADER.FIELDS.NOT is every other field (RFC 3501 6.4.5).
        """
        self.assertEqual(
            self.content(text="HEADER.FIELDS.NOT",
                         fields=("SUBJECT", "X-FOLDED", "MIME-VERSION", "CONTENT-TYPE")),
            b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\n"
            b"Message-ID: <1@example.org>\r\n\r\n")

    def test_text(self):
        """
        BODY[TEXT] is the body after the blank line (RFC 3501 6.4.5).
        """
        self.assertEqual(self.content(text="TEXT"), MIXED[MIXED.index(b"\r\n\r\n") + 4:])

    def test_singlePartBodyIsPartOne(self):
        """
        Part 1 of a message that is not multipart is its body (RFC 3501 6.4.5).
        """
        data = b"Subject: x\r\n\r\nbody\r\n"
        found = locate(outline(data), fetch((1,)))
        self.assertEqual(data[found.offset:found.offset + found.length], b"body\r\n")
        self.assertEqual(locate(outline(data), fetch((1,), "MIME")), b"Subject: x\r\n\r\n")
        self.assertIsNone(locate(outline(data), fetch((2,))))
        self.assertIsNone(locate(outline(data), fetch((1, 1))))

    def test_nestedPart(self):
        """
        Part numbers go down nested multiparts (RFC 3501 6.4.5): 1.2 is the
        HTML alternative.
        """
        self.assertEqual(self.content((1, 2)), b"<p>Hello Bob.</p>")
        self.assertEqual(self.content((1, 1)), b"Hello Bob.")

    def test_mime(self):
        """
        N.MIME is the part's own header (RFC 3501 6.4.5).
        """
        self.assertEqual(self.content((2,), "MIME"),
                         b'Content-Type: application/pdf; name="Report.PDF"\r\n'
                         b"Content-Transfer-Encoding: BASE64\r\n"
                         b'Content-Disposition: attachment; filename="Report.PDF"\r\n'
                         b"Content-ID: <pdf@example.org>\r\n"
                         b"Content-Description: The report\r\n\r\n")
        self.assertEqual(self.content((2,)), b"JVBERi0xLjQK")

    def test_attachedMessage(self):
        """
        For a message/rfc822 part, N is the whole message, N.HEADER and
        N.TEXT its header and body, N.MIME the part's header, and N.1 the
        body of the message (RFC 3501 6.4.5).
        """
        inner_header = b"From: carol@example.com\r\nSubject: =?UTF-8?Q?Caf=C3=A9?=\r\n\r\n"
        self.assertEqual(self.content((3,)), inner_header + b"Forwarded body")
        self.assertEqual(self.content((3,), "HEADER"), inner_header)
        self.assertEqual(self.content((3,), "HEADER.FIELDS", ("SUBJECT",)),
                         b"Subject: =?UTF-8?Q?Caf=C3=A9?=\r\n\r\n")
        self.assertEqual(self.content((3,), "TEXT"), b"Forwarded body")
        self.assertEqual(self.content((3, 1)), b"Forwarded body")
        self.assertEqual(self.content((3,), "MIME"), b"Content-Type: message/rfc822\r\n\r\n")

    def test_missingPart(self):
        """
        Sections that do not exist are None, to be answered NIL (RFC 9051 4.5).
        """
        for part, text in [((4,), None), ((0,), None), ((1, 3), None), ((2, 1), None),
                           ((2,), "HEADER"), ((1,), "TEXT"), ((), "MIME"), ((3, 2), None)]:
            self.assertIsNone(locate(self.outline, fetch(part, text)), (part, text))

    def test_applyPartial(self):
        """
        <origin.count> is clipped to the data; an origin past the end gives
        an empty string (RFC 3501 6.4.5).
        """
        self.assertEqual(apply_partial(100, None), (0, 100))
        self.assertEqual(apply_partial(100, (10, 20)), (10, 20))
        self.assertEqual(apply_partial(100, (90, 20)), (90, 10))
        self.assertEqual(apply_partial(100, (200, 20)), (100, 0))
