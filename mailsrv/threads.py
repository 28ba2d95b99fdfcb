"""
Thread pools as services, for work that must never run on the reactor
(password hashing now; disk I/O later).
"""

from twisted.application.service import Service
from twisted.python.threadpool import ThreadPool


class ThreadPoolService(Service):
    """
    Own a L{ThreadPool}: threads start with the service and stop with it.
    """

    def __init__(self, name: str, max_threads: int):
        self.pool = ThreadPool(minthreads=0, maxthreads=max_threads, name=name)

    def startService(self):
        super().startService()
        self.pool.start()

    def stopService(self):
        super().stopService()
        self.pool.stop()
