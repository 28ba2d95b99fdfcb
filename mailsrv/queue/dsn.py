"""
Bounces: the delivery status notification (RFC 3464) that the queue sends
to the envelope sender when it has given up on some recipients.

The message is assembled by hand rather than with L{email.message}: the
stdlib generator wants a C{message/delivery-status} payload as a list of
header-block messages and re-folds and re-encodes fields by its own rules,
while here every byte on the wire is chosen. Only the envelope sender in
C{To:} can make the result 8-bit (an RFC 6531 address, which needs SMTPUTF8
anyway); everything else is 7-bit, so the bounce can go to any MTA.
"""

from __future__ import annotations

import binascii
import re
import secrets
import textwrap
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid

#: How much of an original without a header/body separator is returned.
_MAX_HEADERS = 64 * 1024

#: Data that may be sent as 7bit (RFC 2045 section 2.7): printable ASCII
#: and tabs in CRLF-terminated lines of at most 998 octets.
_SEVEN_BIT = re.compile(rb"(?:[\t\x20-\x7e]{0,998}\r\n)*[\t\x20-\x7e]{0,998}")

#: Characters outside QCHAR, which utf-8-addr-xtext escapes (RFC 6533 section 3).
_NOT_QCHAR = re.compile(r"[^\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]")

#: Characters a 7bit DSN field cannot carry.
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True)
class FailedRecipient:
    """
    One recipient the queue gave up on, with the reason to report.

    C{from_remote} says whether C{diagnostic} is an SMTP reply from
    C{remote_mta} or text of our own; C{last_attempt} is 0 when unknown.
    """

    address: str
    status: str
    diagnostic: str
    remote_mta: str = ""
    last_attempt: float = 0.0
    from_remote: bool = True


def build_bounce(*, hostname: str, queue_id: str, sender: str, arrival: float,
                 failed: list[FailedRecipient], original: bytes,
                 now: float | None = None) -> bytes:
    """
    Return a complete multipart/report bounce (RFC 3464, RFC 6522) telling
    C{sender} that C{original} could not be delivered to C{failed}.

    @raise ValueError: for the null sender, who must never get a bounce
        (RFC 5321 section 4.5.5).
    """
    if not sender:
        raise ValueError("no bounce is sent to the null sender")
    # "=_" never occurs in quoted-printable, and 128 random bits will not
    # turn up in 7bit returned headers by chance.
    boundary = f"=_{secrets.token_hex(16)}"
    headers = _header_section(original)
    parts = [
        _part("text/plain; charset=utf-8", _explanation(hostname, failed).encode()),
        _part("message/delivery-status",
              _delivery_status(hostname, queue_id, arrival, failed).encode()),
        _part(_headers_type(headers), headers),
    ]
    top = (f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
           f"To: {sender}\r\n"
           "Subject: Undelivered Mail Returned to Sender\r\n"
           f"Date: {_date(time.time() if now is None else now)}\r\n"
           f"Message-ID: {make_msgid(domain=hostname)}\r\n"
           "Auto-Submitted: auto-replied\r\n"
           "MIME-Version: 1.0\r\n"
           "Content-Type: multipart/report; report-type=delivery-status;\r\n"
           f'\tboundary="{boundary}"\r\n'
           "\r\n")
    delimiter = f"--{boundary}".encode()
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts)
    return top.encode() + body + delimiter + b"--\r\n"


def _header_section(original: bytes) -> bytes:
    """
    Return the header section of C{original}, up to its first empty line
    (RFC 5322 section 2.1), or its start when it has none: the body is not
    returned, it may be large and the sender has it.
    """
    head = original[:_MAX_HEADERS]
    blank = re.search(rb"^\r?\n", head, re.MULTILINE)
    return head[:blank.start()] if blank else head


def _headers_type(headers: bytes) -> str:
    """
    Return the media type for the returned headers: UTF-8 headers (RFC 6532)
    are C{message/global-headers} (RFC 6533); other 8-bit bytes are broken
    headers, which C{text/rfc822-headers} may carry quoted-printable
    (RFC 6522), like ASCII ones.
    """
    if not headers.isascii():
        try:
            headers.decode()
            return "message/global-headers"
        except UnicodeDecodeError:
            pass
    return "text/rfc822-headers"


def _part(content_type: str, data: bytes) -> bytes:
    """
    Return a body part for C{data} with CRLF line ends, sent as it is when it
    is 7bit and quoted-printable otherwise, so that the bounce never needs
    8BITMIME: both RFC 6522 and RFC 6533 allow that encoding
    for returned headers, and the report itself is always 7bit.
    """
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    encoding = "7bit"
    if not _SEVEN_BIT.fullmatch(data):
        encoding, data = "quoted-printable", binascii.b2a_qp(data)
    return (f"Content-Type: {content_type}\r\n"
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n").encode() + data


def _explanation(hostname: str, failed: list[FailedRecipient]) -> str:
    """
    Return the human-readable first part: who failed and why, for people
    whose mail reader does not interpret the report.
    """
    text = "\n\n".join(textwrap.fill(paragraph, 72) for paragraph in [
        f"This is the mail system at {hostname}.",
        "Your message could not be delivered to the recipients listed below, and "
        "no further attempts will be made. The reason recorded for each address "
        "is given with it. The headers of your message are attached; its body is not.",
        "If you need help, forward this whole notice to the administrator of your "
        "mail system.",
    ])
    for recipient in failed:
        if not recipient.from_remote:
            source = "our mail system reported"
        elif recipient.remote_mta:
            source = f"the server {recipient.remote_mta} replied"
        else:
            source = "the receiving server replied"
        reason = " ".join(recipient.diagnostic.split()) or "(no reason given)"
        text += (f"\n\n<{recipient.address}> (status {recipient.status}): {source}:\n"
                 + textwrap.fill(reason, 72, initial_indent="    ", subsequent_indent="    "))
    return text + "\n"


def _delivery_status(hostname: str, queue_id: str, arrival: float,
                     failed: list[FailedRecipient]) -> str:
    """
    Return the C{message/delivery-status} body (RFC 3464 section 2.1): the
    per-message fields, then one blank-line separated group per recipient.
    """
    groups = [[("Reporting-MTA", f"dns; {hostname}"), ("X-Mailsrv-Queue-ID", queue_id),
               ("Arrival-Date", _date(arrival))]]
    for recipient in failed:
        group = [("Final-Recipient", _typed_address(recipient.address)),
                 ("Action", "failed"), ("Status", recipient.status)]
        if recipient.remote_mta:
            group.append(("Remote-MTA", f"dns; {recipient.remote_mta}"))
        if recipient.diagnostic:
            kind = "smtp" if recipient.from_remote else "X-mailsrv"
            group.append(("Diagnostic-Code", f"{kind}; {recipient.diagnostic}"))
        if recipient.last_attempt:
            group.append(("Last-Attempt-Date", _date(recipient.last_attempt)))
        groups.append(group)
    return "\r\n".join("".join(_field(name, value) for name, value in group)
                       for group in groups)


def _typed_address(address: str) -> str:
    """
    Return C{address} with its address type: C{rfc822} for ASCII, otherwise
    C{utf-8} in the 7-bit utf-8-addr-xtext form (RFC 6533 section 3).
    """
    if address.isascii():
        return f"rfc822; {address}"
    return "utf-8; " + _escape(_NOT_QCHAR, address)


def _field(name: str, value: str) -> str:
    """
    Return one DSN field, with line breaks and runs of white space in
    C{value} collapsed so that remote text cannot start fields of its own,
    non-printable characters escaped, folded near 78 columns (RFC 5322
    section 2.1.1); a word too long for a 998-octet line is split.
    """
    words = _escape(_NOT_PRINTABLE, " ".join(value.split())).split(" ")
    pieces = [word[i:i + 900] for word in words for i in range(0, len(word), 900)] or [""]
    lines = [f"{name}: {pieces[0]}"]
    for piece in pieces[1:]:
        if len(lines[-1]) + 1 + len(piece) > 78:
            lines.append(f" {piece}")
        else:
            lines[-1] += f" {piece}"
    return "\r\n".join(lines) + "\r\n"


def _escape(unsafe: re.Pattern[str], text: str) -> str:
    """
    Replace each C{unsafe} character with C{\\x{HEX}}, the EmbeddedUnicodeChar
    of RFC 6533 section 3, so that it survives in 7-bit text.
    """
    return unsafe.sub(lambda match: f"\\x{{{ord(match[0]):02X}}}", text)


def _date(when: float) -> str:
    """
    Return C{when} in the RFC 5322 date-time format, in UTC.
    """
    return format_datetime(datetime.fromtimestamp(when, UTC))
