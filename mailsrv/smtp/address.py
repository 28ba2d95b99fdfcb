"""
The arguments of MAIL FROM and RCPT TO: a path and its ESMTP parameters.

Twisted's C{smtp.Address} is ASCII-only and drops the parameters, so our
server parses them here: RFC 5321 section 4.1.2 with the RFC 6531 section
3.3 extensions (UTF-8 in local parts, U-labels in domains, UTF-8 in
parameter values) when SMTPUTF8 is in use.  Every refusal is an
L{AddressError} carrying the reply code and enhanced status code to send.

Decisions worth knowing:

 - Strict where it protects us, lenient where common clients need it.  Like
   Postfix (C{strict_rfc821_envelopes = no}), mox and KumoMTA, we accept
   spaces after the colon (C{MAIL FROM: <a@b>}, forbidden by RFC 5321
   section 3.3 but sent by Outlook and others) and trailing white space
   (RFC 5321 section 4.1.1 says to tolerate it); unlike Postfix's default we
   require the angle brackets, as RFC 5321 does and mox does.
 - A domain is returned in one canonical form so that lookups match: ASCII
   lower-cased, with every internationalized label as its A-label
   (C{bücher.example} and C{XN--BCHER-KVA.example} are both
   C{xn--bcher-kva.example}).  A domain thus never needs SMTPUTF8 (RFC 6531
   section 3.2: an A-label is not "internationalized"), and is what DNS
   wants.  Apply L{canonical_domain} to configured domains before comparing.
 - The local part is kept as given (dequoted): RFC 5321 section 2.4 says to
   preserve its case, and what case or Unicode normalization mean for a
   local mailbox is the delivery policy's decision.
 - Source routes are parsed and dropped (RFC 5321 section 4.1.1.3 and
   appendix C); C{RCPT TO:<Postmaster>} gives C{Mailbox("postmaster", "")}.
"""

from __future__ import annotations

import ipaddress
import re
import string
import unicodedata
from dataclasses import dataclass
from typing import NoReturn

#: RFC 5321 section 4.5.3.1.1-3, in octets of UTF-8.
MAX_LOCAL_PART_OCTETS = 64
MAX_DOMAIN_OCTETS = 255
MAX_PATH_OCTETS = 256
#: RFC 1035 section 2.3.4: what DNS can hold in one label.
MAX_LABEL_OCTETS = 63

_LET_DIG = frozenset(string.ascii_letters + string.digits)
_LDH = _LET_DIG | {"-"}
# RFC 5322 section 3.2.3.
_ATEXT = _LET_DIG | frozenset("!#$%&'*+-/=?^_`{|}~")
# Invisible, but needed to spell some words (RFC 5892 appendix A.1 and A.2).
_JOINERS = frozenset("\u200c\u200d")
# RFC 5892 section 2.1 and 2.2: what a U-label is made of, after lower-casing.
_U_LABEL_CATEGORIES = frozenset({"Ll", "Lo", "Lm", "Mn", "Mc", "Nd"})
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_SNUM = re.compile(r"[0-9]{1,3}")
_IPV6_CHARS = frozenset(string.hexdigits + ":.")
_WHITE = " \t"


class AddressError(ValueError):
    """
    A MAIL or RCPT argument we refuse; C{str()} is the text of the reply.

    @ivar code: the reply code: 501 for syntax, 550 (MAIL) or 553 (RCPT) for
        a non-ASCII address without SMTPUTF8 (RFC 6531 section 3.5).
    @ivar enhanced: the enhanced status code (RFC 3463), e.g. C{"5.1.3"}.
    """

    def __init__(self, code: int, enhanced: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.enhanced = enhanced


@dataclass(frozen=True)
class Mailbox:
    """
    One address of an envelope.

    @ivar local_part: as given, without its quoting (C{"a b"@x} is C{a b}).
    @ivar domain: canonical (see L{canonical_domain}); an address literal is
        kept with its brackets, C{"[192.0.2.1]"} or C{"[IPv6:2001:db8::1]"};
        empty only for C{RCPT TO:<Postmaster>}.
    """

    local_part: str
    domain: str

    def __str__(self) -> str:
        """
        The address as it goes between C{<>} on the wire, quoted only if it
        must be (RFC 5321 section 4.1.2 asks for the least quoting).
        """
        local = self.local_part
        if not _is_dot_string(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain}" if self.domain else local

    @property
    def is_utf8(self) -> bool:
        """
        Whether sending this address needs SMTPUTF8 (RFC 6531 section 3.2);
        with a canonical domain only a non-ASCII local part does.
        """
        return not str(self).isascii()


@dataclass(frozen=True)
class _Role:
    command: str
    what: str
    enhanced: str
    non_ascii_code: int


# RFC 3463 section 3.2: X.1.7 is a bad sender's address, X.1.3 a bad
# destination address; RFC 6531 section 3.5 gives 550 and 553 with X.6.7.
_SENDER = _Role("MAIL FROM", "sender address", "5.1.7", 550)
_RECIPIENT = _Role("RCPT TO", "recipient address", "5.1.3", 553)
_DOMAIN = _Role("", "domain name", "5.1.3", 553)


def parse_mail_from(argument: str, *,
                    smtputf8_allowed: bool) -> tuple[Mailbox | None, dict[str, str | None]]:
    """
    Parse what follows C{MAIL FROM:} (RFC 5321 section 4.1.1.2): the sender,
    or C{None} for the null reverse-path C{<>}, and the parameters.

    @param smtputf8_allowed: whether this server offers SMTPUTF8.  A UTF-8
        address or parameter value also needs the command's own C{SMTPUTF8}
        parameter (RFC 6531 section 3.4).
    @raise AddressError: if the argument is refused.
    """
    text = _trimmed(argument)
    parser = _PathParser(text, _SENDER)
    sender = parser.path(null_allowed=True)
    parameters = _rest_parameters(text[parser.pos:], _SENDER, smtputf8_allowed)
    utf8 = smtputf8_allowed and "SMTPUTF8" in parameters
    if not utf8:
        _check_ascii_values(parameters)
    if parser.non_ascii and not utf8:
        raise _non_ascii_error(_SENDER)
    return sender, parameters


def parse_rcpt_to(argument: str, *,
                  smtputf8_allowed: bool) -> tuple[Mailbox, dict[str, str | None]]:
    """
    Parse what follows C{RCPT TO:} (RFC 5321 section 4.1.1.3): the recipient
    and the parameters.

    @param smtputf8_allowed: whether this transaction's MAIL command carried
        the C{SMTPUTF8} parameter (RFC 6531 section 3.4).
    @raise AddressError: if the argument is refused.
    """
    text = _trimmed(argument)
    parser = _PathParser(text, _RECIPIENT)
    recipient = parser.path(null_allowed=False)
    parameters = _rest_parameters(text[parser.pos:], _RECIPIENT, smtputf8_allowed)
    if parser.non_ascii and not smtputf8_allowed:
        raise _non_ascii_error(_RECIPIENT)
    assert recipient is not None  # null_allowed=False
    return recipient, parameters


def parse_parameters(text: str, *, smtputf8_allowed: bool = False) -> dict[str, str | None]:
    """
    Parse C{esmtp-param *(SP esmtp-param)} (RFC 5321 section 4.1.2):
    keywords upper-cased, values as given (C{None} for a bare keyword), in
    the order given.  Only the syntax is checked; which keywords and values
    mean something is the server's business (555 for the rest).

    @param smtputf8_allowed: allow UTF-8 in values (RFC 6531 section 3.3).
    @raise AddressError: 501 5.5.4 for bad syntax or a repeated keyword.
    """
    parameters: dict[str, str | None] = {}
    for token in text.split(" "):
        if not token:
            continue  # runs of spaces: harmless, and some clients send them
        keyword, equals, value = token.partition("=")
        if not _KEYWORD.fullmatch(keyword):
            raise AddressError(501, "5.5.4", "Bad parameter syntax")
        keyword = keyword.upper()
        if equals and not value:
            raise AddressError(501, "5.5.4", f"Parameter {keyword} needs a value after =")
        for c in value:
            if "!" <= c <= "~" and c != "=":
                continue
            if c > "\x7f" and smtputf8_allowed and _visible(c):
                continue
            if c > "\x7f" and _visible(c):
                raise AddressError(501, "5.5.4",
                                   f"Parameter {keyword} has non-ASCII text without SMTPUTF8")
            raise AddressError(501, "5.5.4", f"Bad character in the value of {keyword}")
        if keyword in parameters:
            raise AddressError(501, "5.5.4", f"Parameter {keyword} given twice")
        parameters[keyword] = value if equals else None
    return parameters


def canonical_domain(domain: str) -> str:
    """
    The form of a domain name that L{Mailbox.domain} holds: lower-cased,
    internationalized labels as A-labels, so C{Bücher.Example} and
    C{xn--bcher-kva.example} compare equal.

    @raise AddressError: if C{domain} is not a valid domain name.
    """
    parser = _PathParser(domain.strip().rstrip("."), _DOMAIN)
    name = parser.domain()
    if parser.pos != len(parser.text):
        parser.fail("bad character in domain")
    return name


def _trimmed(argument: str) -> str:
    """
    The argument without the white space we tolerate around it, refused if
    it holds control characters (RFC 5321 section 4.1.2 forbids them).
    """
    text = argument.strip(_WHITE)
    for c in text:
        if "\ud800" <= c <= "\udfff":
            raise AddressError(501, "5.5.2", "Invalid UTF-8")
        if c < " " or "\x7f" <= c <= "\x9f":
            raise AddressError(501, "5.5.2", "Control characters are not allowed")
    return text


def _rest_parameters(rest: str, role: _Role, smtputf8_allowed: bool) -> dict[str, str | None]:
    if not rest:
        return {}
    if not rest.startswith(" "):
        # "<a@b>junk", "<a@b>>": nothing may touch the closing bracket.
        raise AddressError(501, "5.5.2", f"Syntax: {role.command}:<address> [parameters]")
    return parse_parameters(rest, smtputf8_allowed=smtputf8_allowed)


def _check_ascii_values(parameters: dict[str, str | None]) -> None:
    for keyword, value in parameters.items():
        if value is not None and not value.isascii():
            raise AddressError(501, "5.5.4",
                               f"Parameter {keyword} has non-ASCII text without SMTPUTF8")


def _non_ascii_error(role: _Role) -> AddressError:
    return AddressError(role.non_ascii_code, "5.6.7", "Non-ASCII address needs SMTPUTF8")


def _visible(c: str) -> bool:
    """
    Whether a non-ASCII character may appear in an address: printable, or a
    joiner; not a control, format, private-use or unassigned character,
    which would make two addresses look alike.
    """
    return c.isprintable() or c in _JOINERS


def _is_dot_string(local: str) -> bool:
    return all(atom and all(c in _ATEXT or (c > "\x7f" and _visible(c)) for c in atom)
               for atom in local.split("."))


class _PathParser:
    """
    A recursive-descent parser over one argument, following the ABNF of RFC
    5321 section 4.1.2; records whether it met non-ASCII text, which is
    judged once the parameters (and so SMTPUTF8) are known.
    """

    def __init__(self, text: str, role: _Role):
        self.text = text
        self.pos = 0
        self.role = role
        self.non_ascii = False

    def fail(self, detail: str) -> NoReturn:
        raise AddressError(501, self.role.enhanced, f"Bad {self.role.what} syntax: {detail}")

    def peek(self) -> str:
        return self.text[self.pos:self.pos + 1]

    def take(self, expected: str) -> bool:
        if self.text.startswith(expected, self.pos):
            self.pos += len(expected)
            return True
        return False

    def path(self, null_allowed: bool) -> Mailbox | None:
        """
        C{Path = "<" [ A-d-l ":" ] Mailbox ">"}, or C{"<>"} if allowed.
        """
        if not self.take("<"):
            raise AddressError(501, "5.5.2", f"Syntax: {self.role.command}:<address>")
        if self.take(">"):
            if null_allowed:
                return None
            self.fail("empty address")
        if self.role is _RECIPIENT and self.text[self.pos:self.pos + 11].lower() == "postmaster>":
            # RFC 5321 section 4.1.1.3: "<Postmaster>", any case, no domain.
            self.pos += 11
            return Mailbox("postmaster", "")
        if self.take("@"):
            self.source_route()
        local_part = self.local_part()
        if not self.take("@"):
            self.fail("missing @domain" if self.peek() == ">" else "bad character in local part")
        domain = self.domain_or_literal()
        if not self.take(">"):
            self.fail("bad character in domain" if self.peek() else "missing >")
        if len(self.text[:self.pos].encode()) > MAX_PATH_OCTETS:
            self.fail(f"path longer than {MAX_PATH_OCTETS} octets")
        return Mailbox(local_part, domain)

    def source_route(self) -> None:
        """
        C{A-d-l ":"} after its first "@": parsed, then ignored (RFC 5321
        section 4.1.1.3 and appendix C).
        """
        while True:
            self.domain()
            if self.take(":"):
                return
            if self.peek() == ">":
                self.fail("empty local part")  # "<@example.org>"
            if not (self.take(",") and self.take("@")):
                self.fail("bad source route")

    def local_part(self) -> str:
        """
        C{Local-part = Dot-string / Quoted-string}, dequoted.
        """
        start = self.pos
        if self.take('"'):
            value = self.quoted_string()
        else:
            value = self.dot_string()
        if len(self.text[start:self.pos].encode()) > MAX_LOCAL_PART_OCTETS:
            self.fail(f"local part longer than {MAX_LOCAL_PART_OCTETS} octets")
        return value

    def quoted_string(self) -> str:
        """
        The rest of C{DQUOTE *QcontentSMTP DQUOTE}, after the first quote.
        """
        chars = []
        while True:
            c = self.peek()
            self.pos += 1
            if c == "":
                self.fail("unterminated quoted string")
            if c == '"':
                return "".join(chars)
            if c == "\\":
                # quoted-pairSMTP: backslash, then ASCII graphic or space.
                c = self.peek()
                self.pos += 1
                if not " " <= c <= "~":
                    self.fail("bad quoted pair" if c else "unterminated quoted string")
            elif c > "\x7f":
                if not _visible(c):
                    self.fail("invisible character in local part")
                self.non_ascii = True
            elif not " " <= c <= "~":
                self.fail("bad character in quoted string")
            chars.append(c)

    def dot_string(self) -> str:
        """
        C{Dot-string = Atom *("." Atom)}, atext extended by RFC 6531.
        """
        start = self.pos
        while True:
            atom_start = self.pos
            while self.pos < len(self.text):
                c = self.text[self.pos]
                if c in _ATEXT:
                    pass
                elif c > "\x7f" and _visible(c):
                    self.non_ascii = True
                elif c > "\x7f":
                    self.fail("invisible character in local part")
                else:
                    break
                self.pos += 1
            if self.pos == atom_start:
                if self.peek() == ".":
                    self.fail("local part starts with a dot" if self.pos == start
                              else "two dots in a row in local part")
                if self.pos != start:
                    self.fail("local part ends with a dot")
                self.fail("empty local part" if self.peek() in ("@", ">", "")
                          else "bad character in local part")
            if not self.take("."):
                return self.text[start:self.pos]

    def domain_or_literal(self) -> str:
        if self.peek() == "[":
            return self.address_literal()
        return self.domain()

    def domain(self) -> str:
        """
        C{Domain = sub-domain *("." sub-domain)}, each a letter-digit-hyphen
        label or (RFC 6531) a U-label; returned canonical.
        """
        start = self.pos
        labels = []
        while True:
            label_start = self.pos
            while self.pos < len(self.text) and (self.text[self.pos] in _LDH
                                                 or self.text[self.pos] > "\x7f"):
                self.pos += 1
            label = self.text[label_start:self.pos]
            if not label:
                if self.pos == start:
                    self.fail("empty domain")
                self.fail("domain ends with a dot" if self.peek() in (">", "")
                          else "empty label in domain")
            labels.append(self.label(label))
            if not self.take("."):
                break
        name = ".".join(labels)
        if max(len(self.text[start:self.pos].encode()), len(name)) > MAX_DOMAIN_OCTETS:
            self.fail(f"domain longer than {MAX_DOMAIN_OCTETS} octets")
        return name

    def label(self, label: str) -> str:
        if not label.isascii():
            self.non_ascii = True
            label = unicodedata.normalize("NFC", label.lower())
            if not label.isascii():
                return self.u_label(label)
        label = label.lower()
        if label[0] == "-" or label[-1] == "-":
            self.fail("domain label starts or ends with -")
        if len(label) > MAX_LABEL_OCTETS:
            self.fail(f"domain label longer than {MAX_LABEL_OCTETS} octets")
        if label.startswith("xn--"):
            self.check_a_label(label)
        return label

    def u_label(self, label: str) -> str:
        """
        The A-label for a U-label (RFC 5890 section 2.3.2.1), checked as far
        as the standard library allows: the code point classes of RFC 5892
        and the hyphen and mark rules of RFC 5891 section 4.2.3, but not the
        exact IDNA2008 tables, the joiner contexts or the bidi rule (RFC
        5893), which need the C{idna} package.
        """
        if label[0] == "-" or label[-1] == "-" or label[2:4] == "--":
            self.fail("bad hyphen in internationalized domain label")
        if unicodedata.category(label[0]).startswith("M") or label[0] in _JOINERS:
            self.fail("internationalized domain label starts with a combining mark")
        for c in label:
            if not (c in _LDH or c in _JOINERS
                    or unicodedata.category(c) in _U_LABEL_CATEGORIES):
                self.fail("character not allowed in a domain name")
        a_label = "xn--" + label.encode("punycode").decode("ascii")
        if len(a_label) > MAX_LABEL_OCTETS:
            self.fail(f"domain label longer than {MAX_LABEL_OCTETS} octets")
        return a_label

    def check_a_label(self, label: str) -> None:
        """
        An "xn--" label must be the A-label of a valid U-label (RFC 5891
        section 5.4), or it is not a name anyone can own.
        """
        try:
            u_label = label[4:].encode("ascii").decode("punycode")
        except UnicodeError:
            self.fail("not a valid A-label")
        if (u_label.isascii() or u_label != unicodedata.normalize("NFC", u_label.lower())
                or self.u_label(u_label) != label):
            self.fail("not a valid A-label")

    def address_literal(self) -> str:
        """
        C{"[" ( IPv4 / "IPv6:" IPv6 / General ) "]"} (RFC 5321 section
        4.1.3), returned in its canonical spelling.
        """
        end = self.text.find("]", self.pos)
        if end < 0:
            self.fail("unterminated address literal")
        content = self.text[self.pos + 1:end]
        self.pos = end + 1
        tag, colon, address = content.partition(":")
        if not colon:
            snums = content.split(".")
            if len(snums) != 4 or not all(_SNUM.fullmatch(s) and int(s) <= 255 for s in snums):
                self.fail("not a valid IPv4 address literal")
            return f"[{ipaddress.IPv4Address('.'.join(str(int(s)) for s in snums))}]"
        if tag.lower() != "ipv6":
            # No other tag is registered (RFC 5321 section 4.1.3).
            self.fail("unknown address literal tag")
        try:
            if not address or not set(address) <= _IPV6_CHARS:
                raise ValueError(address)
            ip = ipaddress.IPv6Address(address)
        except ValueError:
            self.fail("not a valid IPv6 address literal")
        if "::" in address and _ipv6_groups(address) > 6:
            # RFC 5321 section 4.1.3: "::" stands for at least two groups.
            self.fail("not a valid IPv6 address literal")
        return f"[IPv6:{ip.compressed}]"


def _ipv6_groups(address: str) -> int:
    """
    The 16-bit groups written out in an IPv6 address (a dotted IPv4 tail
    counts two).
    """
    parts = [p for p in address.split(":") if p]
    return len(parts) + (1 if parts and "." in parts[-1] else 0)
