"""
The realm: what an authenticated address becomes inside the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.cred.portal import IRealm
from zope.interface import Attribute, Interface, implementer


class IMailAccount(Interface):
    """
    An authenticated user of the server.
    """

    address = Attribute("The account's canonical address, C{local@domain} (L{str}).")


@implementer(IMailAccount)
@dataclass(frozen=True)
class MailAccount:
    address: str

    @property
    def local_part(self) -> str:
        return self.address.rpartition("@")[0]

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@implementer(IRealm)
class MailRealm:
    """
    Hand out the avatar each protocol asks for, for a checked address.
    """

    def requestAvatar(self, avatarId, mind, *interfaces):
        if IMailAccount in interfaces:
            return IMailAccount, MailAccount(avatarId), lambda: None
        raise NotImplementedError(f"no avatar for {interfaces!r}")
