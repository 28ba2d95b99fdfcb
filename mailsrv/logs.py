"""
mailsrv's loggers, filtered by the C{[logging] level} setting.

Every mailsrv module logs through L{get_logger}, so the level applies to our
events only and never silences Twisted's or an embedding application's.
"""

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

_levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.debug)
_levels.setLogLevelForNamespace("mailsrv", LogLevel.info)
_observer = FilteringLogObserver(globalLogPublisher, [_levels])


def get_logger(namespace: str) -> Logger:
    """
    A logger for C{namespace} (pass C{__name__}) that obeys L{set_level}.
    """
    return Logger(namespace=namespace, observer=_observer)


def set_level(name: str) -> None:
    """
    Set the lowest level logged by mailsrv: C{debug}, C{info}, C{warn} or C{error}.
    """
    _levels.setLogLevelForNamespace("mailsrv", LogLevel.levelWithName(name))
