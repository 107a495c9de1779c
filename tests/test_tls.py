"""Certificates and server TLS: self-signed generation, validation, and a TLS 1.2 floor."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import stat
import threading
import warnings

from cryptography import x509
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer

from mailbox_appliance.tls import (
    certificate_problem,
    ensure_certificate,
    generate_self_signed,
    server_context_factory,
)
from tests.support.config import make_config

HOSTNAME = "mail.example.test"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _load_cert(path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(_read(path))


def _write_expired_pair(cert_path: str, key_path: str) -> None:
    """A matching key and certificate whose validity ended yesterday."""
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))
    generate_self_signed(cert_path, key_path, HOSTNAME, validity)


class GenerateSelfSignedTests(SynchronousTestCase):
    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        self.cert = os.path.join(directory, "tls", "cert.pem")
        self.key = os.path.join(directory, "tls", "key.pem")
        generate_self_signed(self.cert, self.key, HOSTNAME)

    def test_key_is_readable_by_its_owner_only(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.key).st_mode), 0o600)

    def test_directories_are_created_private(self):
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.key)).st_mode), 0o700)

    def test_san_names_the_hostname_localhost_and_loopback(self):
        san = (
            _load_cert(self.cert)
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value
        )
        self.assertIn(HOSTNAME, san.get_values_for_type(x509.DNSName))
        self.assertIn("localhost", san.get_values_for_type(x509.DNSName))
        self.assertIn(ipaddress.ip_address("127.0.0.1"), san.get_values_for_type(x509.IPAddress))

    def test_subject_is_the_hostname_and_certificate_is_valid_now(self):
        cert = _load_cert(self.cert)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        self.assertEqual(cn, HOSTNAME)
        now = datetime.datetime.now(datetime.UTC)
        self.assertLess(cert.not_valid_before_utc, now)
        self.assertGreater(cert.not_valid_after_utc, now + datetime.timedelta(days=365))

    def test_key_belongs_to_the_certificate(self):
        self.assertIsNone(certificate_problem(self.cert, self.key))

    def test_no_temporary_files_are_left_behind(self):
        self.assertEqual(sorted(os.listdir(os.path.dirname(self.cert))), ["cert.pem", "key.pem"])


class CertificateProblemTests(SynchronousTestCase):
    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        self.cert = os.path.join(directory, "cert.pem")
        self.key = os.path.join(directory, "key.pem")
        generate_self_signed(self.cert, self.key, HOSTNAME)

    def other_pair(self) -> tuple[str, str]:
        directory = os.path.abspath(self.mktemp())
        cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        generate_self_signed(cert, key, HOSTNAME)
        return cert, key

    def test_good_pair_has_no_problem(self):
        self.assertIsNone(certificate_problem(self.cert, self.key))

    def test_missing_certificate_names_tls_cert(self):
        problem = certificate_problem(self.cert + ".gone", self.key)
        self.assertTrue(problem.startswith("tls.cert: cannot read"), problem)

    def test_missing_key_names_tls_key(self):
        problem = certificate_problem(self.cert, self.key + ".gone")
        self.assertTrue(problem.startswith("tls.key: cannot read"), problem)

    def test_directory_names_tls_cert_instead_of_raising(self):
        problem = certificate_problem(os.path.dirname(self.cert), self.key)
        self.assertTrue(problem.startswith("tls.cert: "), problem)

    def test_garbage_certificate_names_tls_cert(self):
        with open(self.cert, "wb") as f:
            f.write(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        problem = certificate_problem(self.cert, self.key)
        self.assertTrue(problem.startswith("tls.cert: "), problem)
        self.assertIn("not a PEM certificate", problem)

    def test_garbage_key_names_tls_key(self):
        with open(self.key, "wb") as f:
            f.write(b"nothing\n")
        problem = certificate_problem(self.cert, self.key)
        self.assertTrue(problem.startswith("tls.key: "), problem)

    def test_key_of_another_certificate_names_tls_key(self):
        _, other_key = self.other_pair()
        problem = certificate_problem(self.cert, other_key)
        self.assertTrue(problem.startswith("tls.key: "), problem)
        self.assertIn("does not belong", problem)

    def test_chain_is_judged_by_its_first_certificate(self):
        other_cert, _ = self.other_pair()
        with open(self.cert, "ab") as f:
            f.write(_read(other_cert))
        self.assertIsNone(certificate_problem(self.cert, self.key))

    def test_key_name_prefixes_the_problem(self):
        problem = certificate_problem(self.cert + ".gone", self.key, key_name="pairing.tls")
        self.assertTrue(problem.startswith("pairing.tls.cert: "), problem)


class EnsureCertificateTests(SynchronousTestCase):
    def setUp(self):
        self.config = make_config(self.mktemp(), hostname=HOSTNAME)

    def test_missing_pair_is_generated(self):
        note = ensure_certificate(self.config)
        self.assertIn(self.config.tls_cert_path, note)
        self.assertIsNone(certificate_problem(self.config.tls_cert_path, self.config.tls_key_path))

    def test_valid_pair_is_left_alone(self):
        ensure_certificate(self.config)
        before = _read(self.config.tls_cert_path), _read(self.config.tls_key_path)
        self.assertIsNone(ensure_certificate(self.config))
        after = _read(self.config.tls_cert_path), _read(self.config.tls_key_path)
        self.assertEqual(before, after)

    def test_a_changed_hostname_gets_a_new_certificate_naming_it(self):
        ensure_certificate(self.config)
        renamed = make_config(self.config.data_dir, hostname="mx2.example.test")
        self.assertIsNotNone(ensure_certificate(renamed))
        names = _load_cert(renamed.tls_cert_path).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
        self.assertIn("mx2.example.test", names.value.get_values_for_type(x509.DNSName))
        self.assertIsNone(ensure_certificate(renamed))

    def test_missing_key_regenerates_both(self):
        ensure_certificate(self.config)
        old_cert = _read(self.config.tls_cert_path)
        os.remove(self.config.tls_key_path)
        self.assertIsNotNone(ensure_certificate(self.config))
        self.assertNotEqual(_read(self.config.tls_cert_path), old_cert)
        self.assertIsNone(certificate_problem(self.config.tls_cert_path, self.config.tls_key_path))

    def test_damaged_certificate_is_regenerated(self):
        ensure_certificate(self.config)
        with open(self.config.tls_cert_path, "wb") as f:
            f.write(b"-----BEGIN CERTIFICATE-----\ntruncated")
        self.assertIsNotNone(ensure_certificate(self.config))
        self.assertIsNone(certificate_problem(self.config.tls_cert_path, self.config.tls_key_path))

    def test_mismatched_key_is_regenerated(self):
        ensure_certificate(self.config)
        elsewhere = os.path.abspath(self.mktemp())
        generate_self_signed(
            os.path.join(elsewhere, "c.pem"), os.path.join(elsewhere, "k.pem"), HOSTNAME
        )
        os.replace(os.path.join(elsewhere, "k.pem"), self.config.tls_key_path)
        self.assertIsNotNone(ensure_certificate(self.config))
        self.assertIsNone(certificate_problem(self.config.tls_cert_path, self.config.tls_key_path))

    def test_expired_certificate_is_regenerated(self):
        _write_expired_pair(self.config.tls_cert_path, self.config.tls_key_path)
        self.assertIsNotNone(ensure_certificate(self.config))
        expiry = _load_cert(self.config.tls_cert_path).not_valid_after_utc
        self.assertGreater(expiry, datetime.datetime.now(datetime.UTC))

    def test_configured_files_are_never_generated_or_touched(self):
        directory = os.path.abspath(self.mktemp())
        cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        _write_expired_pair(cert, key)
        config = make_config(self.mktemp(), tls={"cert": cert, "key": key})
        before = _read(cert)
        self.assertIsNone(ensure_certificate(config))
        self.assertEqual(_read(cert), before)
        self.assertFalse(os.path.exists(os.path.join(config.data_dir, "tls")))


# -- real handshakes on loopback ----------------------------------------------------------


class _Greeter(Protocol):
    """Says hello once the handshake is done; ``lost`` fires when the connection ends."""

    def __init__(self):
        self.lost: Deferred = Deferred()

    def connectionMade(self):
        self.transport.write(b"hello\r\n")

    def connectionLost(self, reason):
        self.lost.callback(None)


@implementer(IOpenSSLContextFactory)
class _LowerSecurityLevel:
    """The appliance's context with OpenSSL's security level at 0, which alone would allow
    TLS 1.0 and 1.1 again: what remains refused is refused by the context's version floor."""

    def __init__(self, options):
        self.context = options.getContext()
        self.context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")

    def getContext(self):
        return self.context


def _tls11_client() -> ssl.SSLContext:
    """A client that offers TLS 1.1 at most (and as old as OpenSSL will still go)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def _verifying_client(cafile: str, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    if maximum is not None:
        context.maximum_version = maximum
    return context


def _handshake(port: int, context: ssl.SSLContext, server_hostname: str) -> tuple[str, bytes]:
    """Connect, handshake, read the greeting: (negotiated version, greeting)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            greeting = b""
            while not greeting.endswith(b"\n"):
                chunk = tls.recv(100)
                if not chunk:
                    break
                greeting += chunk
            return tls.version(), greeting


def _refused(port: int, context: ssl.SSLContext) -> BaseException | str:
    """The exception that ended the handshake, or the version if it succeeded."""
    try:
        version, _ = _handshake(port, context, "localhost")
    except (ssl.SSLError, ConnectionError) as e:
        return e
    return version


def _local_openssl_speaks_tls11(cert: str, key: str) -> bool:
    """Whether this machine's OpenSSL can handshake TLS 1.1 at all (with a permissive peer)."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            server.minimum_version = ssl.TLSVersion.TLSv1
        server.set_ciphers("DEFAULT:@SECLEVEL=0")
        client = _tls11_client()
    except (ValueError, ssl.SSLError):
        return False
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello\r\n")
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        version, _ = _handshake(listener.getsockname()[1], client, "localhost")
        return version == "TLSv1.1"
    except (ssl.SSLError, OSError):
        return False
    finally:
        thread.join(10)
        listener.close()


class ServerContextFactoryTests(TestCase):
    """server_context_factory on a real Twisted TLS listener, talked to by Python's ssl."""

    def setUp(self):
        self.config = make_config(self.mktemp(), hostname=HOSTNAME)
        ensure_certificate(self.config)
        self.connections: list[_Greeter] = []
        # Every server-side connection must be gone before the reactor is checked for leftovers.
        self.addCleanup(
            lambda: gatherResults([c.lost for c in self.connections]).addTimeout(10, reactor)
        )

    def listen(self, context_factory=None) -> int:
        def build(addr):
            protocol = _Greeter()
            self.connections.append(protocol)
            return protocol

        factory = Factory()
        factory.buildProtocol = build
        port = reactor.listenSSL(
            0,
            factory,
            context_factory or server_context_factory(self.config),
            interface="127.0.0.1",
        )
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @inlineCallbacks
    def skip_unless_tls11_is_possible(self):
        possible = yield deferToThread(
            _local_openssl_speaks_tls11, self.config.tls_cert_path, self.config.tls_key_path
        )
        if not possible:
            raise SkipTest(
                "this machine's OpenSSL will not offer TLS 1.1 even at SECLEVEL=0, "
                "so a server's refusal of it cannot be observed"
            )

    @inlineCallbacks
    def test_default_client_negotiates_tls_1_3_and_verifies_localhost(self):
        port = self.listen()
        client = _verifying_client(self.config.tls_cert_path)
        version, greeting = yield deferToThread(_handshake, port, client, "localhost")
        self.assertEqual((version, greeting), ("TLSv1.3", b"hello\r\n"))

    @inlineCallbacks
    def test_tls_1_2_client_is_accepted_and_verifies_the_hostname(self):
        port = self.listen()
        client = _verifying_client(self.config.tls_cert_path, maximum=ssl.TLSVersion.TLSv1_2)
        version, greeting = yield deferToThread(_handshake, port, client, HOSTNAME)
        self.assertEqual((version, greeting), ("TLSv1.2", b"hello\r\n"))

    @inlineCallbacks
    def test_certificate_is_refused_for_a_name_it_does_not_carry(self):
        port = self.listen()
        client = _verifying_client(self.config.tls_cert_path)
        outcome = yield deferToThread(
            lambda: _refused_with_name(port, client, "other.example.test")
        )
        self.assertIsInstance(outcome, ssl.SSLCertVerificationError)

    @inlineCallbacks
    def test_tls_1_1_client_is_refused(self):
        yield self.skip_unless_tls11_is_possible()
        port = self.listen()
        outcome = yield deferToThread(_refused, port, _tls11_client())
        self.assertIsInstance(outcome, (ssl.SSLError, ConnectionError))

    @inlineCallbacks
    def test_tls_1_1_is_refused_by_the_version_floor_not_only_by_openssl_security_level(self):
        yield self.skip_unless_tls11_is_possible()
        port = self.listen(_LowerSecurityLevel(server_context_factory(self.config)))
        outcome = yield deferToThread(_refused, port, _tls11_client())
        self.assertIsInstance(outcome, (ssl.SSLError, ConnectionError))
        # The same lowered server still serves TLS 1.2, so the refusal above is the floor's.
        client = _verifying_client(self.config.tls_cert_path, maximum=ssl.TLSVersion.TLSv1_2)
        version, _ = yield deferToThread(_handshake, port, client, "localhost")
        self.assertEqual(version, "TLSv1.2")


def _refused_with_name(port: int, context: ssl.SSLContext, name: str) -> BaseException | str:
    try:
        version, _ = _handshake(port, context, name)
    except ssl.SSLError as e:
        return e
    return version
