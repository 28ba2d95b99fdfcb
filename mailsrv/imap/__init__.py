"""
The IMAP4rev1 server: command parser, response encoding, SEARCH, and the
protocol with its per-session view of the selected folder.
"""
