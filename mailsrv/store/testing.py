"""
Helpers for testing code that uses a store, ours or an embedder's.
"""

from twisted.internet.defer import Deferred, fail, succeed


def run_now(function, *args, **kwargs) -> Deferred:
    """
    Run blocking work at once, on the calling thread: a stand-in for the
    thread pool that makes every store Deferred fire before it is returned,
    so synchronous tests (and hypothesis state machines) can drive a store.
    """
    try:
        return succeed(function(*args, **kwargs))
    except Exception:
        return fail()
