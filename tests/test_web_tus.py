"""The tus 1.0.0 upload resource and the streaming request, over real sockets: tuspy and raw
http.client clients run in threads against a Site listening on loopback."""

import base64
import datetime
import errno
import hashlib
import http.client
import socket

from tusclient import client as tus_client
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface.verify import verifyObject

from mailbox_appliance.interfaces import IUploadBackend, IUploadWriter
from mailbox_appliance.web import tus, tus_wire
from mailbox_appliance.web.request import (
    UPLOAD_READ_SIZE,
    StreamingRequest,
    read_in_large_pieces,
    upload_site,
)
from tests.support.uploads import FakeUploadBackend

MiB = 1024 * 1024
ALICE = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}
TUS = {"Tus-Resumable": "1.0.0", **ALICE}


def authenticate(request):
    """alice is account 1; anybody else is nobody."""
    if request.getUser() == b"alice" and request.getPassword() == b"secret":
        return succeed(1)
    return succeed(None)


class Echo(Resource):
    """A non-upload resource next to the station: shows what twisted.web buffered."""

    isLeaf = True

    def render_POST(self, request):
        return b"got %d" % len(request.content.read())


def payload(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(b"%d" % seed).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


class StationTestCase(unittest.TestCase):
    """A station on 127.0.0.1:<port>/files/ backed by a FakeUploadBackend."""

    max_size = 64 * MiB

    def setUp(self):
        self.backend = FakeUploadBackend(self.mktemp(), max_length=32 * MiB)
        self.requests = []
        root = Resource()
        root.putChild(b"files", tus.TusResource(self.backend, authenticate, self.max_size, reactor))
        root.putChild(b"echo", Echo())
        recorded = self.requests

        class RecordingRequest(StreamingRequest):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                recorded.append(self)

        site = upload_site(root)
        site.requestFactory = RecordingRequest
        self.channels_lost = []
        self.channels = []
        build = site.buildProtocol

        def buildProtocol(addr):
            protocol = build(addr)
            lost = Deferred()
            original = protocol.connectionLost

            def connectionLost(reason):
                original(reason)
                lost.callback(None)

            protocol.connectionLost = connectionLost
            self.channels.append(protocol)
            self.channels_lost.append(lost)
            return protocol

        site.buildProtocol = buildProtocol
        self.site = site
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self._close)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}/files/"

    def _close(self):
        for protocol, lost in zip(self.channels, self.channels_lost, strict=True):
            transport = getattr(getattr(protocol, "_channel", protocol), "transport", None)
            if not lost.called and transport is not None:
                transport.abortConnection()
        return gatherResults([self.port.stopListening(), *self.channels_lost])

    # clients (run in threads)

    def call(self, method, path, headers=None, body=None):
        """(status, headers with lower-case names, body) of one request on a new connection."""

        def run():
            conn = http.client.HTTPConnection("127.0.0.1", self.port.getHost().port, timeout=30)
            target = "/" + path.split("/", 3)[3] if "://" in path else path
            try:
                conn.request(method, target, body=body, headers=headers or {})
                response = conn.getresponse()
                data = response.read()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, data
            finally:
                conn.close()

        return deferToThread(run)

    async def create(self, length=None, extra=None):
        headers = {**TUS, **(extra or {})}
        if length is not None:
            headers["Upload-Length"] = str(length)
        status, headers, body = await self.call("POST", "/files/", headers)
        self.assertEqual(status, 201, body)
        return headers["location"]

    async def patch(self, url, offset, data, extra=None):
        headers = {
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            **(extra or {}),
        }
        return await self.call("PATCH", url, headers, data)

    async def head(self, url):
        return await self.call("HEAD", url, TUS)

    async def wait_for(self, predicate, timeout=10.0):
        for _ in range(int(timeout / 0.01)):
            if predicate():
                return
            await deferLater(reactor, 0.01, lambda: None)
        self.fail("condition not reached")

    def upload_id(self, url):
        return url.rsplit("/", 1)[1]


def deferred_test(f):
    """Run an async test method as a Deferred (trial awaits it)."""

    def wrapper(self):
        return Deferred.fromCoroutine(f(self))

    wrapper.__name__ = f.__name__
    return wrapper


class HeaderParsingTests(unittest.TestCase):
    def test_metadata_pairs_and_bare_keys(self):
        value = b"filename " + base64.b64encode(b"a b.txt") + b",is_confidential"
        self.assertEqual(
            tus_wire.parse_metadata(value), {"filename": b"a b.txt", "is_confidential": b""}
        )

    def test_metadata_duplicate_or_bad_base64_is_400(self):
        for value in (b"a YQ==,a YQ==", b"a !!!", b"a YQ== extra", b" "):
            with self.assertRaises(tus_wire.TusError) as caught:
                tus_wire.parse_metadata(value)
            self.assertEqual(caught.exception.code, 400)

    def test_checksum_algorithms(self):
        digest = hashlib.sha1(b"x").digest()
        parsed = tus_wire.parse_checksum(b"sha1 " + base64.b64encode(digest))
        self.assertEqual(parsed, ("sha1", digest))
        with self.assertRaises(tus_wire.TusError) as caught:
            tus_wire.parse_checksum(b"md5 " + base64.b64encode(b"0" * 16))
        self.assertEqual(caught.exception.code, 400)

    def test_fake_backend_provides_the_interfaces(self):
        backend = FakeUploadBackend(self.mktemp())
        verifyObject(IUploadBackend, backend)
        info = backend.create(1, 10, {}).result
        verifyObject(IUploadWriter, backend.open_writer(1, info.id, 0).result)


class CoreProtocolTests(StationTestCase):
    @deferred_test
    async def test_options_advertises_version_extensions_and_limits(self):
        status, headers, _ = await self.call("OPTIONS", "/files/")
        self.assertEqual(status, 204)
        self.assertEqual(headers["tus-version"], "1.0.0")
        self.assertEqual(headers["tus-resumable"], "1.0.0")
        self.assertEqual(headers["tus-max-size"], str(self.max_size))
        self.assertEqual(headers["tus-checksum-algorithm"], "sha1,sha256")
        self.assertEqual(
            set(headers["tus-extension"].split(",")),
            {
                "creation",
                "creation-with-upload",
                "creation-defer-length",
                "termination",
                "checksum",
                "expiration",
                "concatenation",
            },
        )

    @deferred_test
    async def test_request_without_or_with_another_tus_version_is_412(self):
        for headers in (ALICE, {**ALICE, "Tus-Resumable": "0.2.2"}):
            status, got, _ = await self.call("POST", "/files/", {**headers, "Upload-Length": "1"})
            self.assertEqual(status, 412)
            self.assertEqual(got["tus-version"], "1.0.0")
            self.assertEqual(got["tus-resumable"], "1.0.0")
        self.assertEqual(self.backend.uploads, {})

    @deferred_test
    async def test_request_without_credentials_is_401(self):
        status, headers, _ = await self.call(
            "POST", "/files/", {"Tus-Resumable": "1.0.0", "Upload-Length": "5"}
        )
        self.assertEqual(status, 401)
        self.assertEqual(headers["www-authenticate"], 'Basic realm="files"')
        url = await self.create(5)
        status, headers, _ = await self.call(
            "PATCH",
            url,
            {
                "Tus-Resumable": "1.0.0",
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
            b"hello",
        )
        self.assertEqual(status, 401)

    @deferred_test
    async def test_creation_gives_absolute_location_and_head_reports_the_upload(self):
        metadata = "filename " + base64.b64encode(b"report.pdf").decode() + ",private"
        url = await self.create(11, {"Upload-Metadata": metadata})
        self.assertTrue(url.startswith(self.base), url)
        status, headers, body = await self.head(url)
        self.assertEqual(status, 200)
        self.assertEqual(body, b"")
        self.assertEqual(headers["upload-offset"], "0")
        self.assertEqual(headers["upload-length"], "11")
        self.assertEqual(headers["cache-control"], "no-store")
        self.assertEqual(
            tus_wire.parse_metadata(headers["upload-metadata"].encode()),
            {
                "filename": b"report.pdf",
                "private": b"",
            },
        )

    @deferred_test
    async def test_patch_appends_and_answers_204_with_the_new_offset(self):
        url = await self.create(11)
        status, headers, _ = await self.patch(url, 0, b"hello ")
        self.assertEqual(status, 204, (headers, self.flushLoggedErrors()))
        self.assertEqual(headers["upload-offset"], "6")
        status, headers, _ = await self.patch(url, 6, b"world")
        self.assertEqual((status, headers["upload-offset"]), (204, "11"))
        self.assertEqual(self.backend.content(self.upload_id(url)), b"hello world")

    @deferred_test
    async def test_patch_without_offset_octet_stream_is_415(self):
        url = await self.create(5)
        status, _, _ = await self.patch(url, 0, b"hello", {"Content-Type": "text/plain"})
        self.assertEqual(status, 415)

    @deferred_test
    async def test_patch_at_the_wrong_offset_is_409(self):
        url = await self.create(10)
        await self.patch(url, 0, b"12345")
        status, _, _ = await self.patch(url, 3, b"45678")
        self.assertEqual(status, 409)
        _, headers, _ = await self.head(url)
        self.assertEqual(headers["upload-offset"], "5")

    @deferred_test
    async def test_patch_or_head_of_an_unknown_upload_is_404_and_of_an_expired_one_410(self):
        status, _, _ = await self.patch(self.base + "nosuch", 0, b"x")
        self.assertEqual(status, 404)
        url = await self.create(5)
        self.backend.expire(self.upload_id(url))
        status, _, _ = await self.patch(url, 0, b"x")
        self.assertEqual(status, 410)
        status, _, _ = await self.head(url)
        self.assertEqual(status, 410)
        status, _, _ = await self.head(self.base + "nosuch")
        self.assertEqual(status, 404)

    @deferred_test
    async def test_unexpected_backend_error_is_500_without_a_traceback(self):
        def broken(owner, upload_id):
            raise RuntimeError("disk on fire")

        self.backend.info = broken
        status, _, body = await self.head(self.base + "u0001x")
        self.assertEqual(status, 500)
        self.assertNotIn(b"disk on fire", body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @deferred_test
    async def test_a_full_disk_is_507_and_the_bytes_before_it_are_kept(self):
        data = payload(3 * MiB, seed=8)
        url = await self.create(len(data))

        def full(writer, chunk):
            if writer.position > MiB:
                return fail(OSError(errno.ENOSPC, "No space left on device"))
            return None

        self.backend.write_hook = full
        status, _, body = await self.patch(url, 0, data)
        self.assertEqual(status, 507)
        self.assertIn(b"out of storage space", body)
        self.assertEqual(self.flushLoggedErrors(OSError), [])  # a log line, not a traceback
        _, headers, _ = await self.head(url)
        self.assertGreater(int(headers["upload-offset"]), 0)

    @deferred_test
    async def test_get_downloads_a_finished_upload_with_its_sha256_etag(self):
        data = payload(MiB + 123)
        url = await self.create(len(data))
        await self.patch(url, 0, data)
        status, headers, body = await self.call("GET", url, TUS)
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-length"], str(len(data)))
        self.assertEqual(headers["etag"], f'"{hashlib.sha256(data).hexdigest()}"')
        self.assertEqual(body, data)

    @deferred_test
    async def test_get_of_an_unfinished_upload_is_404(self):
        url = await self.create(5)
        status, _, _ = await self.call("GET", url, TUS)
        self.assertEqual(status, 404)

    @deferred_test
    async def test_patch_through_a_plain_twisted_web_request_still_works(self):
        self.site.requestFactory = Request  # buffered by twisted.web, then fed the same way
        url = await self.create(5)
        status, headers, _ = await self.patch(url, 0, b"hello")
        self.assertEqual((status, headers["upload-offset"]), (204, "5"))
        self.assertEqual(self.backend.content(self.upload_id(url)), b"hello")

    @deferred_test
    async def test_other_resources_keep_twisted_web_buffering(self):
        status, _, body = await self.call(
            "POST", "/echo", {"Content-Type": "application/octet-stream"}, b"x" * 5000
        )
        self.assertEqual((status, body), (200, b"got 5000"))
        self.assertIsNone(self.requests[-1].sink)


class ExtensionTests(StationTestCase):
    @deferred_test
    async def test_checksum_mismatch_is_460_and_the_chunk_is_discarded(self):
        url = await self.create(10)
        await self.patch(url, 0, b"12345")
        wrong = "sha1 " + base64.b64encode(hashlib.sha1(b"other").digest()).decode()
        status, _, _ = await self.patch(url, 5, b"67890", {"Upload-Checksum": wrong})
        self.assertEqual(status, 460)
        _, headers, _ = await self.head(url)
        self.assertEqual(headers["upload-offset"], "5")
        right = "sha256 " + base64.b64encode(hashlib.sha256(b"67890").digest()).decode()
        status, headers, _ = await self.patch(url, 5, b"67890", {"Upload-Checksum": right})
        self.assertEqual((status, headers["upload-offset"]), (204, "10"))
        self.assertEqual(self.backend.content(self.upload_id(url)), b"1234567890")

    @deferred_test
    async def test_unsupported_checksum_algorithm_is_400(self):
        url = await self.create(5)
        md5 = "md5 " + base64.b64encode(hashlib.md5(b"hello").digest()).decode()
        status, _, _ = await self.patch(url, 0, b"hello", {"Upload-Checksum": md5})
        self.assertEqual(status, 400)

    @deferred_test
    async def test_over_the_station_limit_or_the_backend_limit_is_413(self):
        status, _, _ = await self.call(
            "POST", "/files/", {**TUS, "Upload-Length": str(self.max_size + 1)}
        )
        self.assertEqual(status, 413)
        status, _, body = await self.call(
            "POST", "/files/", {**TUS, "Upload-Length": str(33 * MiB)}
        )
        self.assertEqual(status, 413)
        self.assertIn(b"largest file", body)

    @deferred_test
    async def test_termination_deletes_the_upload(self):
        url = await self.create(5)
        status, headers, _ = await self.call("DELETE", url, TUS)
        self.assertEqual((status, headers["tus-resumable"]), (204, "1.0.0"))
        status, _, _ = await self.head(url)
        self.assertEqual(status, 404)
        status, _, _ = await self.call("DELETE", url, TUS)
        self.assertEqual(status, 404)

    @deferred_test
    async def test_deferred_length_is_declared_by_a_later_patch(self):
        url = await self.create(extra={"Upload-Defer-Length": "1"})
        _, headers, _ = await self.head(url)
        self.assertEqual(headers["upload-defer-length"], "1")
        self.assertNotIn("upload-length", headers)
        status, _, _ = await self.patch(url, 0, b"abc")
        self.assertEqual(status, 204)
        status, headers, _ = await self.patch(url, 3, b"def", {"Upload-Length": "6"})
        self.assertEqual(status, 204, (headers, self.flushLoggedErrors()))
        self.assertEqual(headers["upload-offset"], "6")
        _, headers, _ = await self.head(url)
        self.assertEqual(headers["upload-length"], "6")

    @deferred_test
    async def test_creation_with_upload_takes_the_first_bytes_in_the_post(self):
        status, headers, _ = await self.call(
            "POST",
            "/files/",
            {**TUS, "Upload-Length": "10", "Content-Type": "application/offset+octet-stream"},
            b"0123",
        )
        self.assertEqual((status, headers["upload-offset"]), (201, "4"))
        self.assertTrue(headers["location"].startswith(self.base))
        self.assertEqual(self.backend.content(self.upload_id(headers["location"])), b"0123")
        self.assertIsNotNone(self.requests[-1].sink)

    @deferred_test
    async def test_creation_with_upload_failing_its_checksum_still_reports_the_upload(self):
        wrong = "sha1 " + base64.b64encode(hashlib.sha1(b"other").digest()).decode()
        status, headers, _ = await self.call(
            "POST",
            "/files/",
            {
                **TUS,
                "Upload-Length": "10",
                "Content-Type": "application/offset+octet-stream",
                "Upload-Checksum": wrong,
            },
            b"0123",
        )
        self.assertEqual((status, headers["upload-offset"]), (201, "0"))
        self.assertEqual(self.backend.content(self.upload_id(headers["location"])), b"")

    @deferred_test
    async def test_expiration_is_announced_in_rfc7231_dates(self):
        self.backend.expires = datetime.datetime(2031, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
        status, headers, _ = await self.call("POST", "/files/", {**TUS, "Upload-Length": "4"})
        self.assertEqual(headers["upload-expires"], "Thu, 02 Jan 2031 03:04:05 GMT")
        url = headers["location"]
        _, headers, _ = await self.patch(url, 0, b"ab")
        self.assertEqual(headers["upload-expires"], "Thu, 02 Jan 2031 03:04:05 GMT")
        _, headers, _ = await self.head(url)
        self.assertEqual(headers["upload-expires"], "Thu, 02 Jan 2031 03:04:05 GMT")

    @deferred_test
    async def test_concatenation_of_partial_uploads(self):
        urls = []
        for part in (b"left-", b"right"):
            url = await self.create(len(part), {"Upload-Concat": "partial"})
            await self.patch(url, 0, part)
            _, headers, _ = await self.head(url)
            self.assertEqual(headers["upload-concat"], "partial")
            urls.append(url)
        status, headers, _ = await self.call(
            "POST", "/files/", {**TUS, "Upload-Concat": "final;" + " ".join(urls)}
        )
        self.assertEqual(status, 201)
        final = headers["location"]
        _, headers, _ = await self.head(final)
        self.assertEqual(headers["upload-concat"], "final;" + " ".join(urls))
        self.assertEqual((headers["upload-offset"], headers["upload-length"]), ("10", "10"))
        status, _, _ = await self.patch(final, 10, b"x")
        self.assertEqual(status, 403)
        status, _, body = await self.call("GET", final, TUS)
        self.assertEqual((status, body), (200, b"left-right"))

    @deferred_test
    async def test_method_override_turns_a_post_into_patch_or_delete(self):
        url = await self.create(3)
        status, headers, _ = await self.call(
            "POST",
            url,
            {
                **TUS,
                "X-HTTP-Method-Override": "PATCH",
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
            b"abc",
        )
        self.assertEqual((status, headers["upload-offset"]), (204, "3"))
        status, _, _ = await self.call("POST", url, {**TUS, "X-HTTP-Method-Override": "DELETE"})
        self.assertEqual(status, 204)
        self.assertNotIn(self.upload_id(url), self.backend.uploads)

    @deferred_test
    async def test_cors_preflight_and_exposed_headers(self):
        origin = "https://files.example"
        status, headers, _ = await self.call(
            "OPTIONS",
            "/files/",
            {
                "Origin": origin,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "upload-offset, tus-resumable",
            },
        )
        self.assertEqual(status, 204)
        self.assertEqual(headers["access-control-allow-origin"], origin)
        self.assertIn("PATCH", headers["access-control-allow-methods"])
        allowed = headers["access-control-allow-headers"]
        for name in ("Upload-Offset", "Tus-Resumable", "Authorization", "X-HTTP-Method-Override"):
            self.assertIn(name, allowed)
        self.assertEqual(headers["access-control-max-age"], "86400")
        status, headers, _ = await self.call(
            "POST", "/files/", {**TUS, "Upload-Length": "1", "Origin": origin}
        )
        self.assertEqual(headers["access-control-allow-origin"], origin)
        for name in ("Upload-Offset", "Location", "Upload-Expires", "Tus-Version"):
            self.assertIn(name, headers["access-control-expose-headers"])


class TuspyTests(StationTestCase):
    def uploader(self, path, **kwargs):
        my_client = tus_client.TusClient(self.base, headers=TUS)
        return my_client.uploader(path, chunk_size=512 * 1024, **kwargs)

    def file(self, data):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    @deferred_test
    async def test_tuspy_uploads_in_checksummed_chunks_with_metadata(self):
        data = payload(3 * MiB + 17, seed=1)
        path = self.file(data)

        def run():
            uploader = self.uploader(path, metadata={"filename": "big.bin"}, upload_checksum=True)
            uploader.upload()
            return uploader.url

        url = await deferToThread(run)
        upload = self.backend.uploads[self.upload_id(url)]
        self.assertEqual(upload.metadata, {"filename": b"big.bin"})
        self.assertEqual(upload.sha256, hashlib.sha256(data).hexdigest())

    @deferred_test
    async def test_tuspy_resumes_an_interrupted_upload(self):
        data = payload(2 * MiB + 5, seed=2)
        path = self.file(data)

        def first():
            uploader = self.uploader(path)
            uploader.upload(stop_at=MiB)
            return uploader.url

        url = await deferToThread(first)
        self.assertEqual(self.backend.uploads[self.upload_id(url)].offset, MiB)

        def resume():
            uploader = self.uploader(path, url=url)
            offset = uploader.offset
            uploader.upload()
            return offset

        self.assertEqual(await deferToThread(resume), MiB)
        self.assertEqual(self.backend.content(self.upload_id(url)), data)


class StreamingTests(StationTestCase):
    def send_partial_patch(self, url, declared, data):
        """A PATCH that says ``declared`` bytes, sends ``data`` and hangs up."""
        path = "/" + url.split("/", 3)[3]
        sock = socket.create_connection(("127.0.0.1", self.port.getHost().port))
        head = (
            f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            f"Authorization: {ALICE['Authorization']}\r\nUpload-Offset: 0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nContent-Length: {declared}\r\n\r\n"
        )
        sock.sendall(head.encode() + data)
        sock.close()

    @deferred_test
    async def test_dropped_connection_keeps_what_arrived_and_resumes_byte_exact(self):
        data = payload(4 * MiB, seed=3)
        url = await self.create(len(data))
        sent = 3 * MiB // 2
        await deferToThread(self.send_partial_patch, url, len(data), data[:sent])
        upload_id = self.upload_id(url)
        await self.wait_for(lambda: upload_id in self.backend.kept)
        status, headers, _ = await self.head(url)
        offset = int(headers["upload-offset"])
        self.assertTrue(0 < offset <= sent, offset)
        status, headers, _ = await self.patch(url, offset, data[offset:])
        self.assertEqual((status, headers["upload-offset"]), (204, str(len(data))))
        self.assertEqual(self.backend.content(upload_id), data)
        self.assertEqual(self.backend.uploads[upload_id].sha256, hashlib.sha256(data).hexdigest())

    @deferred_test
    async def test_slow_backend_pauses_reading_from_the_client(self):
        data = payload(8 * MiB, seed=4)
        url = await self.create(len(data))
        gate = Deferred()
        first_write = Deferred()

        def hook(writer, chunk):
            if not hook.called:
                hook.called = True
                reactor.callLater(0, first_write.callback, None)  # after write() returns
                return gate
            return None

        hook.called = False
        self.backend.write_hook = hook
        patched = Deferred.fromCoroutine(self.patch(url, 0, data))
        await first_write
        request = self.requests[-1]
        self.assertTrue(request.readingPaused)
        self.assertNotIn(request.transport, reactor.getReaders())
        self.assertEqual(request.transport.bufferSize, UPLOAD_READ_SIZE)  # fewer, larger reads
        written = len(self.backend.writes)
        await deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(len(self.backend.writes), written)  # nothing read meanwhile
        gate.callback(None)
        status, headers, _ = await patched
        self.assertEqual((status, headers["upload-offset"]), (204, str(len(data))))
        self.assertFalse(request.readingPaused)
        self.assertEqual(self.backend.content(self.upload_id(url)), data)

    @deferred_test
    async def test_a_20_mib_patch_is_written_as_it_arrives_never_buffered(self):
        data = payload(20 * MiB, seed=5)
        url = await self.create(len(data))
        seen = []

        def hook(writer, chunk):
            request = self.requests[-1]
            seen.append((len(chunk), request.bodyEnded))
            self.assertIsNone(request.content)  # no BytesIO, no temporary file
            return None

        self.backend.write_hook = hook
        status, _, _ = await self.patch(url, 0, data)
        self.assertEqual(status, 204)
        request = self.requests[-1]
        self.assertIsNotNone(request.sink)
        before_end = [size for size, ended in seen if not ended]
        self.assertGreater(len(before_end), 10)
        self.assertEqual(sum(size for size, _ in seen), len(data))
        self.assertLess(max(size for size, _ in seen), 4 * MiB)
        self.assertEqual(self.backend.content(self.upload_id(url)), data)


class ReadSizeTests(unittest.TestCase):
    def test_the_tcp_connection_under_tls_reads_in_large_pieces_too(self):
        class Layer:
            def __init__(self, below=None, size=None):
                self.transport = below
                if size is not None:
                    self.bufferSize = size

        tcp = Layer(size=65536)
        tls = Layer(below=tcp)
        read_in_large_pieces(tls)
        self.assertEqual(tcp.bufferSize, UPLOAD_READ_SIZE)
        self.assertFalse(hasattr(tls, "bufferSize"))
        bigger = Layer(size=4 * UPLOAD_READ_SIZE)
        read_in_large_pieces(bigger)
        self.assertEqual(bigger.bufferSize, 4 * UPLOAD_READ_SIZE)
