"""
mailsrv: a complete mail server (ESMTP, POP3, IMAP4) on Twisted.

Build the whole server with L{mailsrv.service.make_service}; run it with
C{twistd -n mailsrv}; administer it with the C{mailsrv} command.
"""

__version__ = "0.1.0.dev0"
