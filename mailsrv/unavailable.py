"""
Listeners for protocols this version does not serve yet.

Each answers in its own protocol's words that the service is unavailable and
closes, so a client gets a clear, temporary, protocol-correct error instead
of a silent port.  A protocol's own factory replaces its entry when it lands.
"""

from twisted.internet.protocol import Factory, Protocol


class _Unavailable(Protocol):
    greeting = b""

    def connectionMade(self):
        self.transport.write(self.greeting)
        self.transport.loseConnection()


def unavailable_factory(protocol: str) -> Factory:
    """
    A factory whose connections are told that C{protocol} is not served.
    """
    greetings = {
        # RFC 3501 7.1.5 BYE greeting; RFC 5530 UNAVAILABLE.
        "imap": "* BYE [UNAVAILABLE] IMAP service not available yet\r\n",
        # RFC 1939 with RFC 3206 response codes.
        "pop3": "-ERR [SYS/TEMP] POP3 service not available yet\r\n",
    }
    protocol_class = type(f"Unavailable{protocol.upper()}", (_Unavailable,),
                          {"greeting": greetings[protocol].encode("ascii")})
    factory = Factory.forProtocol(protocol_class)
    factory.noisy = False
    return factory
