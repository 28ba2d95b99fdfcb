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


def plain_response(response: bytes) -> tuple[str, str, str]:
    """
    The authorization identity, user name and password of a SASL PLAIN
    response (RFC 4616 2: [authzid] NUL authcid NUL passwd).

    @raise ValueError: if it is not made of those three.
    """
    parts = response.split(b"\0")
    if len(parts) != 3:
        raise ValueError("Malformed PLAIN response")
    authzid, user, password = (p.decode("utf-8", "replace") for p in parts)
    return authzid, user, password
