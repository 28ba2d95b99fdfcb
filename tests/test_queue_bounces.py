"""
Tests for L{mailsrv.queue.bounces}: where a bounce goes, and that a bounce
is never dropped because storing it failed for a while.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from mailsrv.queue.bounces import Bouncer
from mailsrv.queue.spool import FAILED, Envelope, QueuedRecipient, Spool
from mailsrv.store.interfaces import TemporaryStoreError
from mailsrv.store.testing import run_now

MESSAGE = b"From: alice@local.test\r\nSubject: hello\r\n\r\nbody\r\n"


class BouncerTests(SynchronousTestCase):
    def setUp(self):
        self.spool = Spool(Path(self.mktemp()))
        self.spool.prepare()
        self.envelope = Envelope("Q1", "alice@local.test", 0.0, len(MESSAGE), [
            QueuedRecipient("bob@remote.test", state=FAILED, reply="550 5.1.1 no such user",
                            status="5.1.1", remote_mta="mx.remote.test", from_remote=True)])
        self.spool.add(self.envelope, MESSAGE)
        self.delivered, self.queued = [], []

    def bouncer(self, deliver_local) -> Bouncer:
        def enqueue(sender, recipients, message):
            self.queued.append((sender, recipients, message))
            return succeed("B1")

        return Bouncer("mail.local.test", self.spool, run_now, deliver_local=deliver_local,
                       is_local=lambda address: address.endswith("@local.test"),
                       enqueue=enqueue)

    def bounce(self, bouncer: Bouncer):
        return bouncer.bounce(self.envelope, self.envelope.recipients)

    def test_localSenderGetsItInTheMailbox(self):
        """
        A local sender's bounce is stored at once, from the null sender
        (RFC 5321 4.5.5: Return-Path <>).
        """
        bouncer = self.bouncer(lambda address, message: succeed(
            self.delivered.append((address, message))))
        self.successResultOf(self.bounce(bouncer))
        [(address, message)] = self.delivered
        self.assertEqual(address, "alice@local.test")
        self.assertTrue(message.startswith(b"Return-Path: <>\r\n"))
        self.assertIn(b"Final-Recipient: rfc822; bob@remote.test", message)
        self.assertEqual(self.queued, [])

    def test_remoteSenderThroughTheQueue(self):
        """
        A remote sender's bounce is queued from the null sender.
        """
        self.envelope.sender = "carol@elsewhere.test"
        self.successResultOf(self.bounce(self.bouncer(lambda a, m: fail(AssertionError()))))
        [(sender, recipients, _)] = self.queued
        self.assertEqual((sender, recipients), ("", ["carol@elsewhere.test"]))

    def test_unknownLocalSenderDropped(self):
        """
        A local sender with no mailbox cannot be told: the bounce is dropped.
        """
        bouncer = self.bouncer(lambda a, m: fail(LookupError("No such user here")))
        self.assertIsNone(self.successResultOf(self.bounce(bouncer)))

    def test_temporaryStoreFailureIsNotADrop(self):
        """
        A store that cannot take the bounce now fails the bounce, so that the
        queue keeps the message and tries again (no mail lost).
        """
        bouncer = self.bouncer(lambda a, m: fail(TemporaryStoreError("disk full")))
        self.failureResultOf(self.bounce(bouncer), TemporaryStoreError)
