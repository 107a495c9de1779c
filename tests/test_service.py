"""The appliance as a whole: ordered start, listeners, implicit TLS, twistd start and stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import urllib.request

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailbox_appliance import service
from mailbox_appliance.datadir import initialise
from mailbox_appliance.monitor.admin import admin_site
from mailbox_appliance.service import Appliance, StartupError
from mailbox_appliance.store import migrate
from tests.support.appliance import LOOPBACK_ANY, insecure_tls, started_appliance
from tests.support.config import config_data, make_config
from tests.support.processes import Twistd, free_port, write_config


def _get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        return response.status, json.loads(response.read())


def initialise_schema_only(config) -> None:
    from mailbox_appliance.store.migrate import upgrade

    os.makedirs(config.data_dir, exist_ok=True)
    upgrade(config.database_url)


def _assert_clean_stop(testcase, twistd: Twistd) -> None:
    """SIGTERM shuts down in order; twistd then re-raises the signal, as it always does."""
    code = twistd.stop()
    testcase.assertIn(code, (0, -signal.SIGTERM))
    out = twistd.output()
    testcase.assertIn("Main loop terminated", out)
    testcase.assertIn("Server Shut Down", out)
    testcase.assertNotIn("Traceback", out)


class ApplianceTests(TestCase):
    """The real Appliance in this process, on loopback port-0 listeners."""

    def start(self, **listen):
        return started_appliance(self, listen=listen)

    @inlineCallbacks
    def test_health_answers_through_the_store(self):
        appliance = yield self.start(admin=[LOOPBACK_ANY])
        port = appliance.address_of("admin").port
        status, body = yield deferToThread(_get, f"http://127.0.0.1:{port}/health")
        self.assertEqual(status, 200)
        self.assertEqual(body["status"], "ok")
        self.assertEqual(body["schema_revision"], migrate.head_revision())

    @inlineCallbacks
    def test_a_port_in_use_fails_start_naming_the_listener(self):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        config = make_config(self.mktemp(), listen={"admin": [f"tcp:{port}:interface=127.0.0.1"]})
        initialise(config)
        appliance = Appliance(config, reactor)
        error = yield self.assertFailure(appliance.start(), StartupError)
        self.assertIn("listen.admin[0]", str(error))
        self.assertIn(str(port), str(error))
        self.assertFalse(appliance.running, "a failed start must release the store")

    @inlineCallbacks
    def test_an_unusable_blob_directory_fails_start_naming_storage(self):
        blocker = os.path.abspath(self.mktemp())
        with open(blocker, "w") as f:
            f.write("a file where the blob directory should be")
        config = make_config(self.mktemp(), storage={"hot_path": blocker})
        initialise_schema_only(config)
        appliance = Appliance(config, reactor)
        error = yield self.assertFailure(appliance.start(), StartupError)
        self.assertTrue(str(error).startswith("storage: cannot prepare"), str(error))

    @inlineCallbacks
    def test_an_empty_srs_secret_fails_start_naming_the_key(self):
        secret = os.path.abspath(self.mktemp())
        open(secret, "w").close()
        config = make_config(self.mktemp(), delivery={"srs_secret_file": secret})
        initialise_schema_only(config)
        appliance = Appliance(config, reactor)
        error = yield self.assertFailure(appliance.start(), StartupError)
        self.assertTrue(str(error).startswith("delivery.srs_secret_file: "), str(error))
        self.assertIn("empty", str(error))

    @inlineCallbacks
    def test_implicit_tls_services_are_wrapped_in_tls(self):
        # No implicit-TLS protocol exists yet; serve the admin site as "https" to prove the
        # wrapping that submissions, imaps, pop3s and https will get.
        self.patch(service, "FACTORY_BUILDERS", {"https": admin_site})
        appliance = yield self.start(https=[LOOPBACK_ANY])
        port = appliance.address_of("https").port
        status, body = yield deferToThread(_get, f"https://127.0.0.1:{port}/health", insecure_tls())
        self.assertEqual((status, body["status"]), (200, "ok"))

    @inlineCallbacks
    def test_haproxy_endpoint_prefix_accepts_proxy_protocol(self):
        appliance = yield self.start(admin=["haproxy:tcp:0:interface=127.0.0.1"])
        port = appliance.address_of("admin").port

        def request() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(
                    b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 10081\r\n"
                    b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n"
                )
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
                return b"".join(chunks)

        response = yield deferToThread(request)
        self.assertTrue(response.startswith(b"HTTP/1.0 200"), response[:100])

    @inlineCallbacks
    def test_services_not_built_yet_are_not_bound(self):
        builders = dict(service.FACTORY_BUILDERS)
        del builders["http"]  # as in a version that does not serve it yet
        self.patch(service, "FACTORY_BUILDERS", builders)
        appliance = yield self.start(admin=[LOOPBACK_ANY], http=[LOOPBACK_ANY])
        self.assertEqual(set(appliance.ports), {"admin"})

    @inlineCallbacks
    def test_stop_closes_every_listener(self):
        appliance = yield self.start(admin=[LOOPBACK_ANY])
        port = appliance.address_of("admin").port
        yield appliance.stop()
        with socket.socket() as s:
            self.assertNotEqual(s.connect_ex(("127.0.0.1", port)), 0)


class TwistdTests(SynchronousTestCase):
    """``twistd -n mailbox-appliance`` as an admin runs it."""

    def config_file(self, directory: str, **overrides) -> str:
        os.makedirs(directory, exist_ok=True)
        data = config_data(os.path.join(directory, "var"), **overrides)
        return write_config(os.path.join(directory, "appliance.yaml"), data)

    def test_starts_serves_and_stops_cleanly_on_sigterm(self):
        directory = os.path.abspath(self.mktemp())
        port = free_port()
        path = self.config_file(directory, listen={"admin": [f"tcp:{port}:interface=127.0.0.1"]})
        twistd = Twistd(directory, "--config", path)
        self.addCleanup(twistd.stop)
        twistd.wait_for("admin listening on")
        status, body = _get(f"http://127.0.0.1:{port}/health")
        self.assertEqual((status, body["status"]), (200, "ok"))
        _assert_clean_stop(self, twistd)

    def test_runs_on_postgresql(self):
        from tests.support.databases import postgres_url

        url = postgres_url(self)  # skipped, with the reason, without a server
        directory = os.path.abspath(self.mktemp())
        port = free_port()
        path = self.config_file(
            directory, database=url, listen={"admin": [f"tcp:{port}:interface=127.0.0.1"]}
        )
        twistd = Twistd(directory, "--config", path)
        self.addCleanup(twistd.stop)
        out = twistd.wait_for("admin listening on")
        self.assertIn("created a new database schema", out)
        status, body = _get(f"http://127.0.0.1:{port}/health")
        self.assertEqual(
            (status, body["status"], body["schema_revision"]), (200, "ok", migrate.head_revision())
        )
        _assert_clean_stop(self, twistd)

    def test_runs_on_built_in_defaults_without_a_config(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", 10081)) == 0:
                self.skipTest("the default admin port 10081 is taken on this machine")
        twistd = Twistd(directory)
        self.addCleanup(twistd.stop)
        out = twistd.wait_for("admin listening on")
        self.assertIn("created a new database schema", out)
        self.assertIn("generated a self-signed TLS certificate", out)
        self.assertTrue(os.path.exists(os.path.join(directory, "var", "appliance.sqlite3")))
        self.assertTrue(os.path.exists(os.path.join(directory, "var", "tls", "key.pem")))
        status, _ = _get("http://127.0.0.1:10081/health")
        self.assertEqual(status, 200)
        _assert_clean_stop(self, twistd)

    def test_invalid_config_lists_every_error_and_exits_nonzero(self):
        directory = os.path.abspath(self.mktemp())
        path = self.config_file(
            directory, listen={"smtpp": ["tcp:25"], "imap": ["bogus:1"]}, storage={"gc_grace": "x"}
        )
        twistd = Twistd(directory, "--config", path)
        code = twistd.wait()
        out = twistd.output()
        self.assertNotEqual(code, 0)
        self.assertIn("listen.smtpp: unknown service", out)
        self.assertIn("listen.imap[0]", out)
        self.assertIn("storage.gc_grace", out)
        self.assertNotIn("Traceback", out)
        self.assertFalse(os.path.exists(os.path.join(directory, "var")), "nothing was created")

    def test_a_port_in_use_stops_the_process_with_one_clear_message(self):
        directory = os.path.abspath(self.mktemp())
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        path = self.config_file(directory, listen={"admin": [f"tcp:{port}:interface=127.0.0.1"]})
        twistd = Twistd(directory, "--config", path)
        self.assertEqual(twistd.wait(), 1)
        out = twistd.output()
        self.assertIn(f"cannot start: listen.admin[0]: cannot listen on 'tcp:{port}", out)
        self.assertNotIn("Traceback", out)

    def test_a_schema_from_newer_software_is_refused_before_start(self):
        from sqlalchemy import create_engine, text

        directory = os.path.abspath(self.mktemp())
        path = self.config_file(directory)
        config = make_config(os.path.join(directory, "var"))
        initialise(config)
        engine = create_engine(config.database_url)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
        engine.dispose()
        twistd = Twistd(directory, "--config", path)
        self.assertNotEqual(twistd.wait(), 0)
        out = twistd.output()
        self.assertIn("newer than this software", out)
        self.assertNotIn("Traceback", out)
