"""
Deliveries into Maildir C{new/} directories, written in batches.

Deliveries that arrive while the disk is busy wait on the reactor and go to
a pool thread together: the thread writes and fsyncs each message in
C{tmp/} and renames it into C{new/}, then fsyncs each C{new/} directory once
for the whole batch, and reports every outcome in one trip back.  Compared
with one pool job per message, that saves a hand-off each way, a directory
fsync and the threads' fight for the GIL per message; C{bench/smtp.py}
measured 10-15% more deliveries a second at 10 and 50 connections.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from mailsrv import files

#: Batches written at the same time.  One thread writing one message after
#: the other serves the disk best (C{bench/smtp.py}: 8-13% more deliveries
#: a second at 10 connections than two batches at once, with less CPU),
#: but a large message or a slow disk must not hold back every delivery
#: behind it: once the latest batch has run for C{LANE_PATIENCE} seconds,
#: the next one starts beside it.
LANES = 4
LANE_PATIENCE = 0.05


@dataclass
class _Delivery:
    #: In a pool thread, C{write(*arguments)} writes the message into tmp/
    #: and fsyncs it, and returns its path there and its file name for new/.
    write: Callable[..., tuple[Path, str]]
    arguments: tuple
    new: Path
    done: Deferred = field(default_factory=Deferred)


class DeliveryBatches:
    """
    The deliveries on their way to disk.

    @param run: hands a function to the store's threads; returns a
        L{Deferred} with its result.
    @param guard: C{guard(function, *args)} calls C{function(*args)} and
        turns an I/O error into the store's temporary failure.
    @param clock: an L{IReactorTime} for L{LANE_PATIENCE}; without one,
        every lane may start at once.
    """

    def __init__(self, run: Callable[..., Deferred], guard: Callable[..., object],
                 clock: IReactorTime | None = None, lanes: int = LANES,
                 patience: float = LANE_PATIENCE):
        self._run = run
        self._guard = guard
        self._clock = clock
        self._lanes = lanes
        self._patience = patience
        self._busy = 0
        self._latest_start = 0.0
        self._wake_up: IDelayedCall | None = None
        self._queued: list[_Delivery] = []

    def deliver(self, new: Path, write: Callable[..., tuple[Path, str]], *arguments) -> Deferred:
        """
        Write a message with C{write(*arguments)} (see L{_Delivery}) and put
        it in C{new}.

        @return: a L{Deferred} fired with None once the file and C{new} are
            fsync'd, or with the failure (the message is then taken out of
            tmp/ and new/ again, unless the disk refuses that too).
        """
        delivery = _Delivery(write, arguments, new)
        self._queued.append(delivery)
        self._start()
        return delivery.done

    def _start(self) -> None:
        while self._queued and self._busy < self._lanes:
            if self._busy and self._clock is not None:
                running_for = self._clock.seconds() - self._latest_start
                if running_for < self._patience:
                    if self._wake_up is None:
                        self._wake_up = self._clock.callLater(
                            self._patience - running_for, self._woken)
                    return
            if self._wake_up is not None:
                self._wake_up.cancel()
                self._wake_up = None
            batch, self._queued = self._queued, []
            self._busy += 1
            if self._clock is not None:
                self._latest_start = self._clock.seconds()
            maybeDeferred(self._run, _write_batch, self._guard, batch).addBoth(
                self._finished, batch)

    def _woken(self) -> None:
        self._wake_up = None
        self._start()

    def _finished(self, outcomes: list[Exception | None] | Failure,
                  batch: list[_Delivery]) -> None:
        self._busy -= 1
        self._start()
        for delivery, outcome in zip(batch, _each(outcomes, len(batch)), strict=True):
            if outcome is None:
                delivery.done.callback(None)
            elif isinstance(outcome, Failure):
                delivery.done.errback(outcome)
            else:
                delivery.done.errback(Failure(outcome, type(outcome), outcome.__traceback__))


def _each(outcomes: list[Exception | None] | Failure, count: int) -> list:
    return [outcomes] * count if isinstance(outcomes, Failure) else outcomes


def _write_batch(guard: Callable[..., object],
                 batch: list[_Delivery]) -> list[Exception | None]:
    """
    (In a pool thread.)  Each message is fsync'd before its rename, so new/
    never holds a partial file; a delivery that fails leaves nothing behind
    and fails alone, except that a failed fsync of new/ fails (and removes)
    every message renamed into it.
    """
    outcomes: list[Exception | None] = []
    placed: dict[Path, list[tuple[int, Path]]] = {}
    for index, delivery in enumerate(batch):
        try:
            temporary, base = guard(delivery.write, *delivery.arguments)
            target = delivery.new / base
            try:
                guard(os.rename, temporary, target)
            except Exception:
                temporary.unlink(missing_ok=True)
                raise
        except Exception as e:
            outcomes.append(e)
        else:
            outcomes.append(None)
            placed.setdefault(delivery.new, []).append((index, target))
    for directory, targets in placed.items():
        try:
            guard(files.fsync_directory, directory)
        except Exception as e:
            for index, target in targets:
                # Should this fail too, the sender is still told to retry:
                # a duplicate at worst, never a loss.
                with suppress(OSError):
                    target.unlink(missing_ok=True)
                outcomes[index] = e
    return outcomes
