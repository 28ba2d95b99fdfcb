"""
The realm: what an authenticated address becomes inside the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.cred.portal import IRealm
from zope.interface import Attribute, Interface, implementer

from mailsrv.store.interfaces import IMailStore, IUserStore


class IMailAccount(Interface):
    """
    An authenticated user of the server.
    """

    address = Attribute("The account's canonical address, C{local@domain} (L{str}).")
    store = Attribute("The account's folders and messages (L{IUserStore}).")


@implementer(IMailAccount)
@dataclass(frozen=True)
class MailAccount:
    address: str
    store: IUserStore

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

    def __init__(self, store: IMailStore):
        self._store = store

    def requestAvatar(self, avatarId, mind, *interfaces):
        if IMailAccount in interfaces:
            return IMailAccount, MailAccount(avatarId, self._store.user(avatarId)), lambda: None
        raise NotImplementedError(f"no avatar for {interfaces!r}")
