"""
Tests for L{mailsrv.smtp.address}: the MAIL FROM and RCPT TO arguments.

Each table row is one argument as it follows the colon; the good ones are
also parsed again from C{str(Mailbox)} to check that it round-trips.
"""

from twisted.trial.unittest import SynchronousTestCase

from mailsrv.smtp.address import (
    AddressError,
    Mailbox,
    canonical_domain,
    parse_mail_from,
    parse_parameters,
    parse_rcpt_to,
)

LONG_LOCAL = "a" * 64
LONG_DOMAIN = ".".join(["d" * 63] * 4)  # 255 octets
assert len(LONG_DOMAIN) == 255

# (argument, smtputf8_allowed, local part, domain, parameters, str(Mailbox))
GOOD_MAIL = [
    ("<alice@example.org>", False, "alice", "example.org", {}, "alice@example.org"),
    ("<Alice@Example.ORG>", False, "Alice", "example.org", {}, "Alice@example.org"),
    ("<alice+tag@example.org>", False, "alice+tag", "example.org", {}, "alice+tag@example.org"),
    ("<a.b.c@sub.example.org>", False, "a.b.c", "sub.example.org", {}, "a.b.c@sub.example.org"),
    ("<!#$%&'*+-/=?^_`{|}~@example.org>", False, "!#$%&'*+-/=?^_`{|}~", "example.org", {},
     "!#$%&'*+-/=?^_`{|}~@example.org"),
    # The leniency: spaces after the colon, trailing white space.
    (" <alice@example.org>", False, "alice", "example.org", {}, "alice@example.org"),
    ("  <alice@example.org> \t", False, "alice", "example.org", {}, "alice@example.org"),
    # Quoted local parts: dequoted, and re-quoted only if they must be.
    ('<"john smith"@example.org>', False, "john smith", "example.org", {},
     '"john smith"@example.org'),
    ('<"a\\"b\\\\c"@example.org>', False, 'a"b\\c', "example.org", {},
     '"a\\"b\\\\c"@example.org'),
    ('<"plain"@example.org>', False, "plain", "example.org", {}, "plain@example.org"),
    ('<"a..b"@example.org>', False, "a..b", "example.org", {}, '"a..b"@example.org'),
    ('<"a>b@c"@example.org>', False, "a>b@c", "example.org", {}, '"a>b@c"@example.org'),
    ('<"\\x"@example.org>', False, "x", "example.org", {}, "x@example.org"),
    ('<""@example.org>', False, "", "example.org", {}, '""@example.org'),
    # Address literals, in canonical spelling.
    ("<a@[192.0.2.1]>", False, "a", "[192.0.2.1]", {}, "a@[192.0.2.1]"),
    ("<a@[192.000.002.001]>", False, "a", "[192.0.2.1]", {}, "a@[192.0.2.1]"),
    ("<a@[IPv6:2001:DB8::1]>", False, "a", "[IPv6:2001:db8::1]", {}, "a@[IPv6:2001:db8::1]"),
    ("<a@[ipv6:::ffff:192.0.2.1]>", False, "a", "[IPv6:::ffff:c000:201]", {},
     "a@[IPv6:::ffff:c000:201]"),
    # Source routes are dropped.
    ("<@a.example,@b.example:user@d.example>", False, "user", "d.example", {},
     "user@d.example"),
    # Limits: exactly at them is fine.
    (f"<{LONG_LOCAL}@example.org>", False, LONG_LOCAL, "example.org", {},
     f"{LONG_LOCAL}@example.org"),
    # Parameters.
    ("<a@example.org> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc AUTH=<>", False,
     "a", "example.org",
     {"SIZE": "1000", "BODY": "8BITMIME", "SMTPUTF8": None, "RET": "HDRS", "ENVID": "abc",
      "AUTH": "<>"}, "a@example.org"),
    ("<a@example.org> size=10  body=7bit", False, "a", "example.org",
     {"SIZE": "10", "BODY": "7bit"}, "a@example.org"),
    # Internationalized: UTF-8 local part, U-labels as A-labels.
    ("<jörg@bücher.example> SMTPUTF8", True, "jörg", "xn--bcher-kva.example",
     {"SMTPUTF8": None}, "jörg@xn--bcher-kva.example"),
    ("<a@XN--BCHER-KVA.Example>", False, "a", "xn--bcher-kva.example", {},
     "a@xn--bcher-kva.example"),
    ("<a@BÜCHER.example> SMTPUTF8", True, "a", "xn--bcher-kva.example",
     {"SMTPUTF8": None}, "a@xn--bcher-kva.example"),
    ("<a@faß.de> SMTPUTF8", True, "a", "xn--fa-hia.de", {"SMTPUTF8": None},
     "a@xn--fa-hia.de"),
    ('<"δοκιμή test"@παράδειγμα.δοκιμή> SMTPUTF8 ENVID=ü', True, "δοκιμή test",
     "xn--hxajbheg2az3al.xn--jxalpdlp", {"SMTPUTF8": None, "ENVID": "ü"},
     '"δοκιμή test"@xn--hxajbheg2az3al.xn--jxalpdlp'),
    ("<用户@例子.广告> SMTPUTF8", True, "用户", "xn--fsqu00a.xn--4rr70v",
     {"SMTPUTF8": None}, "用户@xn--fsqu00a.xn--4rr70v"),
]

GOOD_RCPT = [
    ("<bob@example.org>", False, "bob", "example.org", {}, "bob@example.org"),
    ("<Postmaster>", False, "postmaster", "", {}, "postmaster"),
    ("<POSTMASTER> NOTIFY=NEVER", False, "postmaster", "", {"NOTIFY": "NEVER"}, "postmaster"),
    ("<postmaster@Example.org>", False, "postmaster", "example.org", {},
     "postmaster@example.org"),
    ("<@hosta.int,@jkl.org:userc@d.bar.org>", False, "userc", "d.bar.org", {},
     "userc@d.bar.org"),
    ("<bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b", False, "bob", "example.org",
     {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;a@b"}, "bob@example.org"),
    (" <bob@[IPv6:::1]>", False, "bob", "[IPv6:::1]", {}, "bob@[IPv6:::1]"),
    ("<jörg@example.org>", True, "jörg", "example.org", {}, "jörg@example.org"),
    ("<a@bücher.example> ORCPT=utf-8;a@bücher.example", True, "a", "xn--bcher-kva.example",
     {"ORCPT": "utf-8;a@bücher.example"}, "a@xn--bcher-kva.example"),
]

# (argument, smtputf8_allowed, code, enhanced status)
BAD_MAIL = [
    ("alice@example.org", False, 501, "5.5.2"),          # no brackets
    (" alice@example.org", False, 501, "5.5.2"),
    ("", False, 501, "5.5.2"),
    ("@b", False, 501, "5.5.2"),
    ("<alice@example.org>junk", False, 501, "5.5.2"),    # nothing may touch ">"
    ("<alice@example.org>>", False, 501, "5.5.2"),
    ("<<a@b>>", False, 501, "5.1.7"),
    ("<@b>", False, 501, "5.1.7"),                       # empty local part
    ("<@example.org>", False, 501, "5.1.7"),
    ("<a..b@example.org>", False, 501, "5.1.7"),         # double dot
    ("<a.@example.org>", False, 501, "5.1.7"),           # trailing dot
    ("<.a@example.org>", False, 501, "5.1.7"),
    ("<a@example.org.>", False, 501, "5.1.7"),           # trailing dot in domain
    ("<a@example..org>", False, 501, "5.1.7"),
    ("<a@>", False, 501, "5.1.7"),
    ("<alice>", False, 501, "5.1.7"),                    # no domain
    ("<Postmaster>", False, 501, "5.1.7"),               # only RCPT may omit it
    (f"<{LONG_LOCAL}a@example.org>", False, 501, "5.1.7"),  # 65 octets
    (f"<{'ä' * 33}@example.org> SMTPUTF8", True, 501, "5.1.7"),  # 66 octets, 33 characters
    (f"<a@{LONG_DOMAIN}x>", False, 501, "5.1.7"),         # 256 octets
    (f"<a@{'b' * 64}.org>", False, 501, "5.1.7"),         # 64-octet label
    (f"<{LONG_LOCAL}@{'d' * 63}.{'d' * 63}.{'d' * 63}.{'d' * 3}>", False, 501, "5.1.7"),
    ("<a@-example.org>", False, 501, "5.1.7"),           # label starts with "-"
    ("<a@example-.org>", False, 501, "5.1.7"),
    ("<a@ex_ample.org>", False, 501, "5.1.7"),           # RFC 5321 4.1.2: no underscore
    ("<a@[300.1.1.1]>", False, 501, "5.1.7"),
    ("<a@[1.2.3]>", False, 501, "5.1.7"),
    ("<a@[IPv6:1.2.3.4]>", False, 501, "5.1.7"),
    ("<a@[IPv6:fe80::1%eth0]>", False, 501, "5.1.7"),
    ("<a@[IPv6:1:2:3:4:5:6:7::]>", False, 501, "5.1.7"),  # "::" for one group
    ("<a@[x400:whatever]>", False, 501, "5.1.7"),         # unregistered tag
    ("<a@[192.0.2.1>", False, 501, "5.1.7"),
    ('<"abc@example.org>', False, 501, "5.1.7"),         # unterminated quoted string
    ('<"a\\', False, 501, "5.1.7"),
    ("<a b@example.org>", False, 501, "5.1.7"),          # spaces in the address
    ("<a@example .org>", False, 501, "5.1.7"),
    ("< a@example.org>", False, 501, "5.1.7"),
    ("<a@example.org", False, 501, "5.1.7"),
    ("<a@xn--zz.example>", False, 501, "5.1.7"),          # not a real A-label
    ("<a@xn--a-.example>", False, 501, "5.1.7"),          # decodes to ASCII
    ("<a@☃.example> SMTPUTF8", True, 501, "5.1.7"),       # symbol: not IDNA2008
    ("<a\u202e@example.org> SMTPUTF8", True, 501, "5.1.7"),  # invisible override
    ("<@a.example:>", False, 501, "5.1.7"),
    ("<@a.example;b@c>", False, 501, "5.1.7"),
    # Control characters anywhere.
    ("<a\0b@example.org>", False, 501, "5.5.2"),
    ("<a@example.org>\r\nRSET", False, 501, "5.5.2"),
    ("<a@example.org>\nRSET", False, 501, "5.5.2"),
    ("<a@example.org> SIZE=1\x7f", False, 501, "5.5.2"),
    ("<a\x85@example.org> SMTPUTF8", True, 501, "5.5.2"),   # C1 control
    ("<a\ud800@example.org>", False, 501, "5.5.2"),        # not UTF-8
    # Non-ASCII without SMTPUTF8: RFC 6531 3.5 gives 550 for MAIL.
    ("<jörg@example.org>", False, 550, "5.6.7"),
    ("<jörg@example.org> SMTPUTF8", False, 550, "5.6.7"),
    ("<jörg@example.org>", True, 550, "5.6.7"),            # offered, not asked for
    ("<a@bücher.example>", True, 550, "5.6.7"),
    ("<@bücher.example:a@b.example>", True, 550, "5.6.7"),
    # Parameters.
    ("<a@example.org> SIZE=1 size=2", False, 501, "5.5.4"),   # duplicate
    ("<a@example.org> =1000", False, 501, "5.5.4"),           # "=" without keyword
    ("<a@example.org> SIZE=", False, 501, "5.5.4"),
    ("<a@example.org> ENVID=a=b", False, 501, "5.5.4"),
    ("<a@example.org> -X=1", False, 501, "5.5.4"),
    ("<a@example.org> junk!", False, 501, "5.5.4"),
    ("<a@example.org> <b@example.org>", False, 501, "5.5.4"),
    ("<a@example.org> ENVID=ü", True, 501, "5.5.4"),          # UTF-8 needs SMTPUTF8
]

BAD_RCPT = [
    ("bob@example.org", False, 501, "5.5.2"),
    ("<>", False, 501, "5.1.3"),                          # no null forward-path
    ("<bob@example..org>", False, 501, "5.1.3"),
    ("<postmaster >", False, 501, "5.1.3"),
    (f"<{LONG_LOCAL}a@example.org>", False, 501, "5.1.3"),
    ("<@a.example,@" + "b" * 200 + ".example:" + LONG_LOCAL + "@c.example>", False,
     501, "5.1.3"),                                        # path over 256 octets
    ("<a@[300.1.1.1]>", False, 501, "5.1.3"),
    # Non-ASCII without SMTPUTF8: RFC 6531 3.5 gives 553 for RCPT.
    ("<jörg@example.org>", False, 553, "5.6.7"),
    ("<a@bücher.example>", False, 553, "5.6.7"),
    ('<"jö rg"@example.org>', False, 553, "5.6.7"),
    ("<a@example.org> NOTIFY=SUCCESS notify=NEVER", False, 501, "5.5.4"),
    ("<a@example.org> ORCPT=utf-8;ü@example.org", False, 501, "5.5.4"),
]


class TableTests(SynchronousTestCase):
    """
    The good and bad arguments above, each checked in full.
    """

    def check_good(self, parse, table):
        problems = []
        for argument, utf8, local, domain, parameters, text in table:
            got = parse(argument, smtputf8_allowed=utf8)
            if got != (Mailbox(local, domain), parameters) or str(got[0]) != text:
                problems.append((argument, got, str(got[0])))
                continue
            # str(Mailbox) is what goes back on the wire: it must parse to
            # the same mailbox.
            again = parse(f"<{text}>" + (" SMTPUTF8" if parse is parse_mail_from else ""),
                          smtputf8_allowed=True)
            if again[0] != got[0]:
                problems.append((argument, "round trip", again[0]))
        self.assertEqual(problems, [])

    def check_bad(self, parse, table):
        problems = []
        for argument, utf8, code, enhanced in table:
            try:
                got = parse(argument, smtputf8_allowed=utf8)
            except AddressError as e:
                if (e.code, e.enhanced) != (code, enhanced) or not str(e).isascii():
                    problems.append((argument, e.code, e.enhanced, str(e)))
            else:
                problems.append((argument, "accepted", got))
        self.assertEqual(problems, [])

    def test_goodMail(self):
        self.check_good(parse_mail_from, GOOD_MAIL)

    def test_goodRcpt(self):
        self.check_good(parse_rcpt_to, GOOD_RCPT)

    def test_badMail(self):
        self.check_bad(parse_mail_from, BAD_MAIL)

    def test_badRcpt(self):
        self.check_bad(parse_rcpt_to, BAD_RCPT)

    def test_tablesAreBigEnough(self):
        self.assertGreaterEqual(len(GOOD_MAIL) + len(GOOD_RCPT), 30)
        self.assertGreaterEqual(len(BAD_MAIL) + len(BAD_RCPT), 40)


class MailFromTests(SynchronousTestCase):
    def test_nullReversePath(self):
        """
        "<>" is the null reverse-path of bounces (RFC 5321 4.5.5), and may
        carry parameters.
        """
        self.assertEqual(parse_mail_from("<>", smtputf8_allowed=False), (None, {}))
        self.assertEqual(parse_mail_from(" <> SIZE=10 ", smtputf8_allowed=False),
                         (None, {"SIZE": "10"}))

    def test_reasons(self):
        """
        The text of the error says what is wrong, so a person reading the
        reply can fix it.
        """
        cases = {
            "a@b": "Syntax: MAIL FROM:<address>",
            "<a..b@c>": "Bad sender address syntax: two dots in a row in local part",
            f"<{LONG_LOCAL}a@b>": "Bad sender address syntax: local part longer than 64 octets",
            "<jörg@b>": "Non-ASCII address needs SMTPUTF8",
            "<a@b> SIZE=1 SIZE=2": "Parameter SIZE given twice",
        }
        for argument, reason in cases.items():
            error = self.assertRaises(AddressError, parse_mail_from, argument,
                                      smtputf8_allowed=False)
            self.assertEqual(str(error), reason)

    def test_errorIsValueError(self):
        self.assertTrue(issubclass(AddressError, ValueError))


class RcptToTests(SynchronousTestCase):
    def test_bareKeywordIsAParameter(self):
        """
        "<a@b> junk" is grammatical: "junk" is an esmtp-keyword without a
        value.  It is returned, and the server refuses it as an unknown
        parameter (555, RFC 5321 4.1.1.11).
        """
        self.assertEqual(parse_rcpt_to("<a@b> junk", smtputf8_allowed=False),
                         (Mailbox("a", "b"), {"JUNK": None}))

    def test_postmasterOnlyAlone(self):
        """
        Only the exact "<Postmaster>" may go without a domain.
        """
        for argument in ("<postmasters>", "<@a.example:Postmaster>", "<post master>"):
            self.assertRaises(AddressError, parse_rcpt_to, argument, smtputf8_allowed=False)


class ParameterTests(SynchronousTestCase):
    def test_good(self):
        self.assertEqual(parse_parameters(""), {})
        self.assertEqual(parse_parameters("SIZE=1000 BODY=8BITMIME SMTPUTF8"),
                         {"SIZE": "1000", "BODY": "8BITMIME", "SMTPUTF8": None})
        self.assertEqual(parse_parameters("x-Foo=Bar+2B"), {"X-FOO": "Bar+2B"})
        self.assertEqual(parse_parameters("ENVID=é", smtputf8_allowed=True), {"ENVID": "é"})
        self.assertEqual(list(parse_parameters("B=1 A=2 C")), ["B", "A", "C"])

    def test_bad(self):
        for text in ("=x", "SIZE=", "A=1 a=2", "A=b=c", "A_B=1", "A=\t", "A=\0", "A=é",
                     "A=\u200b", "é=1"):
            error = self.assertRaises(AddressError, parse_parameters, text)
            self.assertEqual((error.code, error.enhanced), (501, "5.5.4"), repr(text))
        self.assertRaises(AddressError, parse_parameters, "A=\u200b", smtputf8_allowed=True)


class MailboxTests(SynchronousTestCase):
    def test_isUtf8(self):
        """
        Only a non-ASCII local part needs SMTPUTF8: domains are kept as
        A-labels.
        """
        self.assertTrue(Mailbox("jörg", "example.org").is_utf8)
        self.assertFalse(Mailbox("a", "xn--bcher-kva.example").is_utf8)
        self.assertFalse(Mailbox("postmaster", "").is_utf8)

    def test_frozen(self):
        mailbox = Mailbox("a", "b")
        self.assertRaises(AttributeError, setattr, mailbox, "domain", "c")
        self.assertEqual(mailbox, Mailbox("a", "b"))


class CanonicalDomainTests(SynchronousTestCase):
    def test_oneFormForEverySpelling(self):
        """
        Configured domains go through the same function, so that a
        recipient's domain matches however either was written.
        """
        for name in ("bücher.example", "Bücher.Example", "xn--bcher-kva.example",
                     "XN--BCHER-KVA.EXAMPLE", "bücher.example."):
            self.assertEqual(canonical_domain(name), "xn--bcher-kva.example", name)
        self.assertEqual(canonical_domain("Example.ORG"), "example.org")

    def test_refused(self):
        for name in ("", "a..b", "-a.example", "a_b.example", "[192.0.2.1]", "xn--zz",
                     "a b", "☃.example"):
            self.assertRaises(AddressError, canonical_domain, name)
