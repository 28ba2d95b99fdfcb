"""
Username/password credentials that also carry the client's address, so the
checker can throttle failures per address.
"""

from twisted.cred.credentials import UsernamePassword


class PeerUsernamePassword(UsernamePassword):
    """
    L{UsernamePassword} from a client at C{peer} (an IP address string).
    """

    def __init__(self, username: bytes | str, password: bytes | str, peer: str | None):
        super().__init__(username, password)
        self.peer = peer
