"""
The POP3 server (RFC 1939 with CAPA, UIDL, TOP, SASL PLAIN and STLS) on
the store's INBOX.
"""
