"""
Tests for the outbound queue: the runner, the SMTP client and the spool,
delivering to the scriptable sink on 127.0.0.1 through static routes.
"""

from __future__ import annotations

import socket
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.names import dns
from twisted.trial.unittest import TestCase

from mailsrv.config import ConfigError, QueueSettings, RouteSettings, SmarthostSettings
from mailsrv.queue.client import ClientSettings
from mailsrv.queue.routing import Router
from mailsrv.queue.runner import QueueRunner
from mailsrv.queue.spool import DELIVERED, PENDING, Spool
from tests.smtp_sink import SMTPSink, sink_tls
from tests.test_queue_routing import FakeAuthority

MESSAGE = (b"From: Alice <alice@sender.test>\r\nTo: bob@remote.test\r\n"
           b"Subject: hello\r\nMessage-ID: <1@sender.test>\r\n\r\nHi Bob.\r\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_in_thread(function, *args, **kwargs) -> Deferred:
    return deferToThread(function, *args, **kwargs)


class QueueTestCase(TestCase):
    """
    A runner whose mail for remote.test goes to a sink on 127.0.0.1.
    """

    route_tls = "none"

    def setUp(self):
        self.sink = SMTPSink()
        self.port = self.sink.listen()
        self.addCleanup(self.sink.stop)
        self.spool_path = Path(self.mktemp()).absolute()
        self.bounces = []
        self.settings = QueueSettings(
            retry_first=0.2, retry_max=0.4,
            routes={"remote.test": RouteSettings(host="127.0.0.1", port=self.port,
                                                 tls=self.route_tls)})
        self.client = ClientSettings("sender.test", connect_timeout=5, command_timeout=5,
                                     data_timeout=5)

    def runner(self, settings: QueueSettings | None = None, client=None,
               start: bool = True) -> QueueRunner:
        spool = Spool(self.spool_path)
        spool.lock_or_fail()
        settings = settings or self.settings

        def bounce(envelope, failed):
            self.bounces.append((envelope, list(failed)))
            return succeed(None)

        runner = QueueRunner(spool, Router(settings, resolver=object()), settings,
                             client or self.client, run_in_thread, reactor, bounce=bounce)
        if start:
            runner.startService()
        self.addCleanup(lambda: runner.running and runner.stopService())
        return runner

    async def until(self, condition, timeout: float = 10.0) -> None:
        """
        Wait for C{condition()}, failing after C{timeout} seconds.
        """
        for _ in range(int(timeout / 0.02)):
            if condition():
                return
            await deferLater(reactor, 0.02, lambda: None)
        self.fail(f"timed out waiting for {condition}")

    def connections_at_mail(self) -> list[int]:
        """
        The sink's open connections at each MAIL, to check limits with.
        """
        seen = []
        self.sink.mail_reply = lambda sender: (
            seen.append(len(self.sink.connections)) or (250, "2.1.0 OK"))
        return seen

    def queued_files(self) -> list[str]:
        return sorted(p.name for p in self.spool_path.iterdir()
                      if p.suffix in (".eml", ".json"))


class DeliveryTests(QueueTestCase):
    async def test_dotLineAtChunkBoundary(self):
        """
        A line "." at offset 16384 (where twisted.mail's client cut its
        chunks, twisted-mail-notes 2.4) and at our own 256 KiB chunk edge
        arrives intact: the message does not end early.
        """
        def filler(upto: int, text: bytes) -> bytes:
            line = b"x" * 98 + b"\r\n"
            room = upto - len(text)
            return text + line * (room // 100) + b"y" * (room % 100 - 2) + b"\r\n"

        message = filler(16384, MESSAGE) + b".\r\nQUIT\r\n"
        message = filler(256 * 1024, message) + b".\r\nRSET\r\n.hidden\r\nend\r\n"
        self.assertEqual(message.index(b"\r\n.\r\nQUIT") + 2, 16384)
        self.assertEqual(message.index(b"\r\n.\r\nRSET") + 2, 256 * 1024)
        runner = self.runner()
        await runner.enqueue("alice@sender.test", ["bob@remote.test"], message)
        received = await self.sink.wait_for_messages(1)
        self.assertEqual(received[0].data, message)
        self.assertEqual(received[0].recipients, ["bob@remote.test"])
        await self.until(lambda: not self.queued_files())

    async def test_envelopeAndParameters(self):
        """
        The sender, all recipients of one domain in one transaction, SIZE
        (RFC 1870) and BODY=8BITMIME for 8-bit content (RFC 6152).
        """
        runner = self.runner()
        message = MESSAGE + "Grüße\r\n".encode()
        await runner.enqueue("alice@sender.test", ["bob@remote.test", "carol@remote.test"],
                             message)
        received = (await self.sink.wait_for_messages(1))[0]
        self.assertEqual(received.sender, "alice@sender.test")
        self.assertEqual(received.recipients, ["bob@remote.test", "carol@remote.test"])
        self.assertIn(f"SIZE={len(message)}", received.mail_parameters)
        self.assertIn("BODY=8BITMIME", received.mail_parameters)
        self.assertEqual(self.sink.sessions, 1)

    async def test_temporaryFailureRetried(self):
        """
        A 4xx to RCPT is retried after retry_first and delivered once.
        """
        self.sink.rcpt_reply = lambda address, attempt: (
            (451, "4.3.0 try later") if attempt == 1 else (250, "2.1.5 OK"))
        runner = self.runner()
        queue_id = await runner.enqueue("alice@sender.test", ["bob@remote.test"], MESSAGE)
        await self.until(lambda: self.sink.rcpt_attempts.get("bob@remote.test") == 1)
        self.assertEqual(self.queued_files(), [f"{queue_id}.eml", f"{queue_id}.json"])
        await self.sink.wait_for_messages(1)
        await self.until(lambda: not self.queued_files())
        self.assertEqual(len(self.sink.received), 1)
        self.assertEqual(self.sink.rcpt_attempts["bob@remote.test"], 2)
        self.assertEqual(self.bounces, [])

    async def test_temporaryFailureOnData(self):
        """
        A 4xx at the end of data counts for every recipient; all are sent
        again together.
        """
        self.sink.data_reply = lambda message, attempt: (
            (452, "4.3.1 full") if attempt == 1 else (250, "2.0.0 OK"))
        runner = self.runner()
        await runner.enqueue("alice@sender.test", ["bob@remote.test", "carol@remote.test"],
                             MESSAGE)
        received = await self.sink.wait_for_messages(1)
        self.assertEqual(received[0].recipients, ["bob@remote.test", "carol@remote.test"])
        self.assertEqual(self.sink.data_attempts, 2)

    async def test_permanentFailureBounces(self):
        """
        A 5xx fails only its recipient; the others are delivered, and the
        sender gets one bounce naming the failed one with the reply.
        """
        self.sink.rcpt_reply = lambda address, attempt: (
            (550, "5.1.1 no such user") if address.startswith("bob") else (250, "2.1.5 OK"))
        runner = self.runner()
        await runner.enqueue("alice@sender.test", ["bob@remote.test", "carol@remote.test"],
                             MESSAGE)
        await self.until(lambda: self.bounces)
        envelope, failed = self.bounces[0]
        self.assertEqual(envelope.sender, "alice@sender.test")
        self.assertEqual([r.address for r in failed], ["bob@remote.test"])
        self.assertEqual(failed[0].status, "5.1.1")
        self.assertEqual(failed[0].reply, "550 5.1.1 no such user")
        self.assertEqual(failed[0].remote_mta, f"127.0.0.1[127.0.0.1]:{self.port}")
        self.assertEqual(self.sink.received[0].recipients, ["carol@remote.test"])
        await self.until(lambda: not self.queued_files())
        self.assertEqual(len(self.bounces), 1)

    async def test_nullSenderNeverBounces(self):
        """
        RFC 5321 4.5.5: a message from the null sender (a bounce) that fails
        is dropped, never bounced again.
        """
        self.sink.rcpt_reply = lambda address, attempt: (550, "5.1.1 no such user")
        runner = self.runner()
        await runner.enqueue("", ["bob@remote.test"], MESSAGE)
        await self.until(lambda: self.sink.rcpt_attempts.get("bob@remote.test") == 1)
        await self.until(lambda: not self.queued_files())
        self.assertEqual(self.bounces, [])

    async def test_giveUp(self):
        """
        A recipient still failing temporarily give_up_after seconds after
        arrival is bounced with the last (4xx) status.
        """
        self.sink.rcpt_reply = lambda address, attempt: (451, "4.4.5 busy")
        settings = QueueSettings(retry_first=0.1, retry_max=0.1, give_up_after=0.5,
                                 routes=self.settings.routes)
        runner = self.runner(settings)
        await runner.enqueue("alice@sender.test", ["bob@remote.test"], MESSAGE)
        await self.until(lambda: self.bounces)
        failed = self.bounces[0][1]
        self.assertEqual(failed[0].status, "4.4.5")
        self.assertGreater(failed[0].attempts, 1)
        await self.until(lambda: not self.queued_files())

    async def test_receiverDownThenUp(self):
        """
        A refused connection is retried; once the receiver is up, the
        message goes, once.
        """
        port = free_port()
        settings = QueueSettings(retry_first=0.2, retry_max=0.2, routes={
            "remote.test": RouteSettings(host="127.0.0.1", port=port, tls="none")})
        runner = self.runner(settings)
        queue_id = await runner.enqueue("alice@sender.test", ["bob@remote.test"], MESSAGE)
        recipient = runner.envelopes[queue_id].recipients[0]
        await self.until(lambda: recipient.attempts >= 2)
        self.assertEqual(recipient.state, PENDING)
        self.assertIn("refused", recipient.reply)
        late = SMTPSink()
        late.listen(port)
        self.addCleanup(late.stop)
        await late.wait_for_messages(1)
        await self.until(lambda: not self.queued_files())
        self.assertEqual(len(late.received), 1)

    async def test_oneConnectionCarriesTheQueue(self):
        """
        Messages waiting for one destination share one connection, one
        transaction after another.
        """
        settings = QueueSettings(max_per_destination=1, routes=self.settings.routes)
        runner = self.runner(settings, start=False)
        for n in range(5):
            await runner.enqueue("alice@sender.test", [f"user{n}@remote.test"], MESSAGE)
        runner.startService()
        await self.sink.wait_for_messages(5)
        self.assertEqual(self.sink.sessions, 1)

    async def test_concurrencyPerDestination(self):
        """
        No more than max_per_destination connections to one destination.
        """
        settings = QueueSettings(max_per_destination=2, routes=self.settings.routes)
        runner = self.runner(settings, start=False)
        for n in range(8):
            await runner.enqueue("alice@sender.test", [f"user{n}@remote.test"], MESSAGE)
        most = self.connections_at_mail()
        runner.startService()
        await self.sink.wait_for_messages(8)
        self.assertEqual(max(most), 2)
        self.assertEqual(self.sink.sessions, 2)

    async def test_concurrencyInTotal(self):
        """
        No more than max_concurrent connections in all, whatever the number
        of destinations.
        """
        routes = {f"d{n}.test": RouteSettings(host="127.0.0.1", port=self.port, tls="none")
                  for n in range(4)}
        runner = self.runner(QueueSettings(max_concurrent=2, routes=routes), start=False)
        for n in range(8):
            await runner.enqueue("alice@sender.test", [f"user@d{n % 4}.test"], MESSAGE)
        most = self.connections_at_mail()
        runner.startService()
        await self.sink.wait_for_messages(8)
        self.assertEqual(max(most), 2)

    async def test_timeout(self):
        """
        A server that stops answering costs a command timeout and a retry,
        not a stuck queue.
        """
        self.sink.hang_after_greeting = True
        client = ClientSettings("sender.test", connect_timeout=5, command_timeout=0.3)
        runner = self.runner(client=client)
        queue_id = await runner.enqueue("alice@sender.test", ["bob@remote.test"], MESSAGE)
        recipient = runner.envelopes[queue_id].recipients[0]
        await self.until(lambda: recipient.attempts >= 1)
        self.assertEqual(recipient.state, PENDING)
        self.assertIn("no reply within 0.3 seconds", recipient.reply)


class DataTimeoutTests(QueueTestCase):
    async def test_noReplyToEndOfData(self):
        """
        RFC 5321 4.5.3.2.6: a server that never answers the final "." costs
        data_timeout, then the message is tried again.
        """
        self.sink.data_reply = lambda message, attempt: None if attempt == 1 else (250, "OK")
        client = ClientSettings("sender.test", command_timeout=5, data_timeout=0.3)
        runner = self.runner(client=client)
        await runner.enqueue("alice@sender.test", ["bob@remote.test"], MESSAGE)
        await self.sink.wait_for_messages(1)
        self.assertEqual(self.sink.data_attempts, 2)


class RestartTests(QueueTestCase):
    async def test_restartDeliversTheQueue(self):
        """
        Messages queued while the receiver is down survive a restart of the
        runner and are delivered once by the new one.
        """
        port = free_port()
        routes = {"remote.test": RouteSettings(host="127.0.0.1", port=port, tls="none")}
        first = self.runner(QueueSettings(retry_first=60, retry_max=60, routes=routes))
        ids = [await first.enqueue("alice@sender.test", [f"u{n}@remote.test"], MESSAGE)
               for n in range(3)]
        await self.until(lambda: all(e.recipients[0].attempts for e in first.envelopes.values()))
        await first.stopService()
        self.assertEqual(len(self.queued_files()), 6)
        late = SMTPSink()
        late.listen(port)
        self.addCleanup(late.stop)
        second = self.runner(QueueSettings(retry_first=0.1, retry_max=0.1, routes=routes))
        self.assertEqual(sorted(second.envelopes), [])
        for queue_id in ids:
            # The schedule on disk says 60 s; the operator asks for now.
            (second.spool.requests / f"retry-{queue_id}").touch()
        await late.wait_for_messages(3)
        await self.until(lambda: not self.queued_files())
        self.assertEqual(sorted(r for m in late.received for r in m.recipients),
                         ["u0@remote.test", "u1@remote.test", "u2@remote.test"])

    async def test_deliveredRecipientsAreRemembered(self):
        """
        With two destinations, the one that accepted is written down before
        the other finishes: a restart sends only to the one still pending.
        """
        other = SMTPSink()
        other_port = other.listen()
        self.addCleanup(other.stop)
        other.rcpt_reply = lambda address, attempt: (451, "4.3.0 later")
        routes = dict(self.settings.routes)
        routes["other.test"] = RouteSettings(host="127.0.0.1", port=other_port, tls="none")
        first = self.runner(QueueSettings(retry_first=60, retry_max=60, routes=routes))
        queue_id = await first.enqueue("alice@sender.test", ["bob@remote.test",
                                                             "dan@other.test"], MESSAGE)
        await self.sink.wait_for_messages(1)
        await self.until(lambda: first.spool.read(queue_id).recipients[1].attempts == 1)
        states = [r.state for r in first.spool.read(queue_id).recipients]
        self.assertEqual(states, [DELIVERED, PENDING])
        await first.stopService()
        other.rcpt_reply = lambda address, attempt: (250, "2.1.5 OK")
        second = self.runner(QueueSettings(retry_first=60, retry_max=60, routes=routes))
        (second.spool.requests / "retry-all").touch()
        await other.wait_for_messages(1)
        await self.until(lambda: not self.queued_files())
        self.assertEqual(len(self.sink.received), 1)

    async def test_uncommittedMessageRemoved(self):
        """
        A message file without its envelope (a crash before the commit
        point) is removed at start, never sent.
        """
        spool = Spool(self.spool_path)
        spool.prepare()
        spool.message_path("ORPHAN").write_bytes(MESSAGE)
        (self.spool_path / ".X.json.1.2.tmp").write_bytes(b"{")
        self.runner()
        await self.until(lambda: not spool.message_path("ORPHAN").exists())
        self.assertEqual(list(self.spool_path.glob(".*")), [])
        self.assertEqual(self.sink.sessions, 0)

    def test_oneRunnerPerQueue(self):
        """
        A second server cannot send from a queue another one holds (both
        would send everything).
        """
        Spool(self.spool_path).lock_or_fail()
        self.assertRaises(ConfigError, Spool(self.spool_path).lock_or_fail)


class OperatorTests(QueueTestCase):
    async def test_deleteRequest(self):
        """
        C{delete-ID} in requests/ takes the message out for good.
        """
        self.sink.rcpt_reply = lambda address, attempt: (451, "4.3.0 later")
        runner = self.runner(QueueSettings(retry_first=60, retry_max=60,
                                           routes=self.settings.routes))
        queue_id = await runner.enqueue("alice@sender.test", ["bob@remote.test"], MESSAGE)
        await self.until(lambda: self.sink.rcpt_attempts.get("bob@remote.test") == 1)
        (runner.spool.requests / f"delete-{queue_id}").touch()
        await self.until(lambda: not self.queued_files())
        self.assertEqual(runner.envelopes, {})
        self.assertEqual(list(runner.spool.requests.iterdir()), [])


class TransportSecurityTests(QueueTestCase):
    def setUp(self):
        super().setUp()
        self.tls, self.ca = sink_tls(Path(self.mktemp()))

    def secure_sink(self, **kwargs) -> int:
        sink = SMTPSink(tls=self.tls, **kwargs)
        self.addCleanup(sink.stop)
        self.secure = sink
        return sink.listen()

    def route(self, port, tls, **kwargs) -> QueueSettings:
        return QueueSettings(retry_first=60, retry_max=60, routes={
            "remote.test": RouteSettings(host="127.0.0.1", port=port, tls=tls, **kwargs)})

    async def test_verifiedStartTLS(self):
        """
        RFC 3207: with tls = "verify", the message goes inside TLS after the
        certificate was checked against the CA.
        """
        port = self.secure_sink()
        client = ClientSettings("sender.test", ca_file=self.ca)
        runner = self.runner(self.route(port, "verify"), client)
        await runner.enqueue("alice@sender.test", ["bob@remote.test"], MESSAGE)
        received = await self.secure.wait_for_messages(1)
        self.assertTrue(received[0].tls)

    async def test_verifyRefusesUnknownCA(self):
        """
        With tls = "verify", a certificate from a CA we do not trust stops
        delivery (temporarily); nothing is sent.
        """
        port = self.secure_sink()
        runner = self.runner(self.route(port, "verify"))
        queue_id = await runner.enqueue("alice@sender.test", ["bob@remote.test"], MESSAGE)
        recipient = runner.envelopes[queue_id].recipients[0]
        await self.until(lambda: recipient.attempts == 1)
        self.assertEqual(recipient.state, PENDING)
        self.assertEqual(self.secure.received, [])

    async def test_opportunisticEncrypts(self):
        """
        The default policy uses STARTTLS when offered, without checking the
        certificate.
        """
        port = self.secure_sink()
        runner = self.runner(self.route(port, "opportunistic"))
        await runner.enqueue("alice@sender.test", ["bob@remote.test"], MESSAGE)
        self.assertTrue((await self.secure.wait_for_messages(1))[0].tls)

    async def test_opportunisticWithoutStartTLS(self):
        """
        A server without STARTTLS still gets mail under "opportunistic".
        """
        runner = self.runner(self.route(self.port, "opportunistic"))
        await runner.enqueue("alice@sender.test", ["bob@remote.test"], MESSAGE)
        self.assertFalse((await self.sink.wait_for_messages(1))[0].tls)

    async def test_requiredWithoutStartTLS(self):
        """
        Under "required", a server that does not offer STARTTLS gets
        nothing; the message waits.
        """
        runner = self.runner(self.route(self.port, "required"))
        queue_id = await runner.enqueue("alice@sender.test", ["bob@remote.test"], MESSAGE)
        recipient = runner.envelopes[queue_id].recipients[0]
        await self.until(lambda: recipient.attempts == 1)
        self.assertIn("does not offer STARTTLS", recipient.reply)
        self.assertEqual(self.sink.rcpt_attempts, {})

    async def test_smarthostWithAuth(self):
        """
        Everything goes to the smarthost, logged in with AUTH (RFC 4954)
        inside verified TLS.
        """
        port = self.secure_sink(auth={"relay-user": "relay-secret"})
        settings = QueueSettings(smarthost=SmarthostSettings(
            host="127.0.0.1", port=port, username="relay-user", password="relay-secret"))
        runner = self.runner(settings, ClientSettings("sender.test", ca_file=self.ca))
        await runner.enqueue("alice@sender.test", ["someone@anywhere.example"], MESSAGE)
        received = await self.secure.wait_for_messages(1)
        self.assertEqual(received[0].recipients, ["someone@anywhere.example"])
        self.assertTrue(received[0].tls)

    async def test_smarthostImplicitTLS(self):
        """
        A smarthost on an implicit-TLS port (RFC 8314, 465) is reached with
        TLS from the first byte, and its certificate checked.
        """
        sink = SMTPSink(tls=self.tls, auth={"relay-user": "relay-secret"})
        self.addCleanup(sink.stop)
        settings = QueueSettings(smarthost=SmarthostSettings(
            host="127.0.0.1", port=sink.listen(implicit_tls=True), implicit_tls=True,
            username="relay-user", password="relay-secret"))
        runner = self.runner(settings, ClientSettings("sender.test", ca_file=self.ca))
        await runner.enqueue("alice@sender.test", ["someone@anywhere.example"], MESSAGE)
        received = await sink.wait_for_messages(1)
        self.assertTrue(received[0].tls)

    async def test_smarthostWrongPassword(self):
        """
        Credentials the smarthost refuses make the message wait, not bounce.
        """
        port = self.secure_sink(auth={"relay-user": "relay-secret"})
        settings = QueueSettings(retry_first=60, retry_max=60, smarthost=SmarthostSettings(
            host="127.0.0.1", port=port, username="relay-user", password="wrong"))
        runner = self.runner(settings, ClientSettings("sender.test", ca_file=self.ca))
        queue_id = await runner.enqueue("alice@sender.test", ["x@anywhere.example"], MESSAGE)
        recipient = runner.envelopes[queue_id].recipients[0]
        await self.until(lambda: recipient.attempts == 1)
        self.assertEqual(recipient.state, PENDING)
        self.assertIn("refused our credentials", recipient.reply)
        self.assertEqual(self.secure.received, [])



class MXDeliveryTests(QueueTestCase):
    """
    Delivery by MX records (RFC 5321 5.1), answered by a twisted.names
    authority fake; the MX port is the sink's, 127.0.0.2 refuses.
    """

    def mx_runner(self, records) -> QueueRunner:
        settings = QueueSettings(retry_first=60, retry_max=60)
        runner = QueueRunner(Spool(self.spool_path), Router(
            settings, FakeAuthority(records), mx_port=self.port), settings, self.client,
            run_in_thread, reactor,
            bounce=lambda envelope, failed: succeed(self.bounces.append(failed)))
        runner.spool.lock_or_fail()
        runner.startService()
        self.addCleanup(runner.stopService)
        return runner

    async def test_refusingMXThenNext(self):
        """
        The preferred MX refuses the connection; the next one gets the mail.
        """
        runner = self.mx_runner({
            b"mx.example": [dns.Record_MX(20, b"backup.mx.example"),
                            dns.Record_MX(10, b"primary.mx.example")],
            b"primary.mx.example": [dns.Record_A("127.0.0.2")],
            b"backup.mx.example": [dns.Record_A("127.0.0.1")],
        })
        await runner.enqueue("alice@sender.test", ["bob@mx.example"], MESSAGE)
        received = await self.sink.wait_for_messages(1)
        self.assertEqual(received[0].recipients, ["bob@mx.example"])

    async def test_onlyMXRefuses(self):
        """
        A domain whose only MX refuses connections keeps its mail queued
        (a temporary failure), naming the refusal.
        """
        runner = self.mx_runner({
            b"mx.example": [dns.Record_MX(10, b"primary.mx.example")],
            b"primary.mx.example": [dns.Record_A("127.0.0.2")],
        })
        queue_id = await runner.enqueue("alice@sender.test", ["bob@mx.example"], MESSAGE)
        recipient = runner.envelopes[queue_id].recipients[0]
        await self.until(lambda: recipient.attempts == 1)
        self.assertEqual(recipient.state, PENDING)
        self.assertIn("primary.mx.example[127.0.0.2]", recipient.reply)
        self.assertIn("refused", recipient.reply)

    async def test_implicitMXAndNullMX(self):
        """
        No MX: the domain's own A record takes mail; a null MX (RFC 7505)
        fails the recipient at once with 5.1.10, without a connection.
        """
        runner = self.mx_runner({
            b"plain.example": [dns.Record_A("127.0.0.1")],
            b"nullmx.example": [dns.Record_MX(0, b"")],
        })
        await runner.enqueue("alice@sender.test", ["bob@plain.example", "eve@nullmx.example"],
                             MESSAGE)
        received = await self.sink.wait_for_messages(1)
        self.assertEqual(received[0].recipients, ["bob@plain.example"])
        await self.until(lambda: self.bounces)
        self.assertEqual([(r.address, r.status) for r in self.bounces[0]],
                         [("eve@nullmx.example", "5.1.10")])
