"""
The C{twistd mailsrv} plugin; the work is in L{mailsrv.tap}, imported only
when the plugin is used.
"""

from twisted.application.service import ServiceMaker

mailsrv = ServiceMaker(
    "mailsrv",
    "mailsrv.tap",
    "A complete mail server: ESMTP, submission, POP3 and IMAP4 for virtual domains.",
    "mailsrv",
)
