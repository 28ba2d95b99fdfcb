"""
C{twistd mailsrv}: a thin wrapper over L{mailsrv.service.make_service} that
turns configuration mistakes into one line and a non-zero exit, and reloads
on SIGHUP.
"""

from __future__ import annotations

import pwd
import sys

from twisted.application.service import MultiService
from twisted.python import usage

from mailsrv.config import CONFIG_ENV, DATA_ENV, ConfigError, load_settings
from mailsrv.service import ReloadOnHangup, make_service


class Options(usage.Options):
    synopsis = "[--config PATH] [--data DIR]"
    longdesc = ("Runs every listener, the queue and the store of one mail server. "
                "With no config file it runs on built-in defaults: localhost only, "
                "unprivileged ports, data in ./mailsrv-data.")
    optParameters = [
        ["config", "c", None, f"TOML config file (default: ${CONFIG_ENV}, else built-in)"],
        ["data", "d", None, f"data folder (default: ${DATA_ENV}, else server.data_dir)"],
    ]


def _owner(options) -> tuple[int, int] | None:
    """
    The C{(uid, gid)} twistd will switch to after binding, if any.
    """
    parent = getattr(options, "parent", None) or {}
    uid, gid = parent.get("uid"), parent.get("gid")
    if uid is None:
        return None
    return uid, gid if gid is not None else pwd.getpwuid(uid).pw_gid


class _ExitOnConfigError(MultiService):
    """
    Stop twistd with a one-line message when a listener cannot open.
    """

    def privilegedStartService(self):
        try:
            super().privilegedStartService()
        except ConfigError as e:
            # twistd already sends sys.stderr to the log; say it on the
            # terminal too.
            message = f"mailsrv: {e}"
            print(message, file=sys.__stderr__, flush=True)
            raise SystemExit(message) from None


def makeService(options) -> MultiService:
    from twisted.internet import reactor

    try:
        settings = load_settings(options["config"], options["data"])
        mail = make_service(settings, reactor=reactor, owner=_owner(options))
    except ConfigError as e:
        raise SystemExit(f"mailsrv: {e}") from None
    top = _ExitOnConfigError()
    mail.setServiceParent(top)
    ReloadOnHangup(mail, reactor).setServiceParent(top)
    return top
