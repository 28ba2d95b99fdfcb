"""
Thread pools as services, for work that must never run on the reactor:
password hashing and disk I/O.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


class ThreadPoolService(Service):
    """
    Threads that start with the service and stop with it, and L{run} to
    hand them work.

    Built on L{concurrent.futures}: handing a job over and its result back
    costs the reactor thread less than L{twisted.python.threadpool} does,
    and at hundreds of deliveries a second (C{bench/smtp.py}) the reactor
    thread is what every connection waits for.
    """

    def __init__(self, name: str, max_threads: int, reactor):
        self.max_threads = max_threads
        self._reactor = reactor
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix=name)

    def run(self, function, *args, **kwargs) -> Deferred:
        """
        Call C{function(*args, **kwargs)} in a pool thread.

        @return: a L{Deferred} fired in the reactor thread with its result
            or its exception.
        """
        result = Deferred()
        future = self._executor.submit(function, *args, **kwargs)
        future.add_done_callback(lambda done: self._reactor.callFromThread(_fire, result, done))
        return result

    def stopService(self):
        super().stopService()
        # Jobs already handed over finish: an acknowledged write is never cut short.
        self._executor.shutdown(wait=True)


def _fire(result: Deferred, done: Future) -> None:
    error = done.exception()
    if error is None:
        result.callback(done.result())
    else:
        result.errback(Failure(error, type(error), error.__traceback__))
