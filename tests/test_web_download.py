"""Downloads from the file-transfer station: ranges, validators, Content-Disposition, streaming.

A real ``twisted.web.server.Site`` listens on loopback; http.client, raw sockets and curl talk
to it from threads, the way browsers and download managers would.
"""

from __future__ import annotations

import email
import email.utils
import hashlib
import http.client
import os
import random
import socket
import subprocess
from datetime import UTC, datetime

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http import datetimeToString
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from mailbox_appliance.web.download import (
    CHUNK_SIZE,
    Content,
    content_disposition,
    parse_range,
    send,
)

DATA = random.Random(1).randbytes(100_000)
MODIFIED = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
MODIFIED_HTTP = "Thu, 02 Jan 2020 03:04:05 GMT"
N = len(DATA)


class ReadFailed(Exception):
    """Raised by a Content whose storage breaks mid-body."""


class Reads:
    """Wraps a ``read`` to record calls, and how far reads run ahead of the response."""

    def __init__(self, read):
        self._read = read
        self.calls: list[tuple[int, int]] = []
        self.outstanding = 0
        self.max_outstanding = 0
        self.written = 0  # chunks passed to request.write
        self.max_ahead = 0
        self.at_disconnect: int | None = None

    def read(self, offset: int, length: int) -> Deferred[bytes]:
        self.calls.append((offset, length))
        self.max_ahead = max(self.max_ahead, len(self.calls) - self.written)
        self.outstanding += 1
        self.max_outstanding = max(self.max_outstanding, self.outstanding)

        def done(result):
            self.outstanding -= 1
            return result

        return self._read(offset, length).addBoth(done)


def bytes_reader(data: bytes):
    return lambda offset, length: succeed(data[offset : offset + length])


def file_reader(path: str):
    def pread(offset: int, length: int) -> bytes:
        with open(path, "rb") as f:
            return os.pread(f.fileno(), length, offset)

    return lambda offset, length: deferToThread(pread, offset, length)


def make_content(data: bytes = DATA, read=None, **kw) -> Content:
    kw.setdefault("name", "data.bin")
    kw.setdefault("modified", MODIFIED)
    return Content(
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        read=read or bytes_reader(data),
        **kw,
    )


class DownloadResource(Resource):
    """Serves ``self.content`` at every path, counting writes for the read-ahead check."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.content = make_content()
        self.disposition = "attachment"
        self.reads: Reads | None = None

    def render_GET(self, request):
        reads = self.reads
        if reads is not None:
            write = request.write

            def counting_write(data):
                reads.written += 1
                write(data)

            request.write = counting_write

            def gone(reason):
                reads.at_disconnect = len(reads.calls)

            request.notifyFinish().addErrback(gone)
        send(request, self.content, disposition=self.disposition, reactor=reactor)
        return NOT_DONE_YET

    render_HEAD = render_GET


def fetch(port: int, method: str = "GET", headers: dict[str, str] | None = None):
    """One request with http.client: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, "/file", headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def read_until_error(port: int) -> tuple[bytes, int, BaseException | None]:
    """Read a body until it ends or breaks: (bytes, declared length, error)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    got = bytearray()
    try:
        conn.request("GET", "/file")
        response = conn.getresponse()
        declared = int(response.headers["Content-Length"])
        try:
            while chunk := response.read1(65536):
                got += chunk
        except (http.client.HTTPException, OSError) as e:
            return bytes(got), declared, e
        return bytes(got), declared, None
    finally:
        conn.close()


def multipart_parts(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """Split a multipart/byteranges body into (Content-Range, bytes) pairs."""
    boundary = content_type.split("boundary=", 1)[1].encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        assert payload.endswith(b"\r\n")
        message = email.message_from_bytes(head.lstrip(b"\r\n") + b"\r\n\r\n")
        parts.append((message["Content-Range"], payload[:-2]))
    return parts


def disposition_filenames(value: str) -> tuple[str, str]:
    """(filename, filename*) parsed back with the email package's RFC 2231 support."""
    message = email.message_from_string(f"Content-Disposition: {value}\n\n")
    params = message.get_params(header="content-disposition")
    plain = [v for k, v in params if k == "filename" and isinstance(v, str)]
    extended = [v for k, v in params if k == "filename" and isinstance(v, tuple)]
    return plain[0], email.utils.collapse_rfc2231_value(extended[0])


class ServerTestCase(TestCase):
    """Starts the Site on 127.0.0.1:0 and tears down every connection it accepted."""

    def setUp(self) -> None:
        self.resource = DownloadResource()
        self.factory = WrappingFactory(Site(self.resource))
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.portno = self.port.getHost().port
        self.addCleanup(self._close_all)

    @inlineCallbacks
    def _close_all(self):
        yield self.port.stopListening()
        for proto in list(self.factory.protocols):
            proto.transport.abortConnection()
        for _ in range(200):
            if not self.factory.protocols:
                break
            yield deferLater(reactor, 0.01, lambda: None)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.portno}/file"

    def fetch(self, method: str = "GET", **headers: str) -> Deferred:
        names = {k.replace("_", "-"): v for k, v in headers.items()}
        return deferToThread(fetch, self.portno, method, names)

    def curl(self, *args: str) -> Deferred:
        return deferToThread(
            subprocess.run,
            ["curl", "-sS", *args],
            capture_output=True,
            timeout=120,
        )


class FullAndHeadTests(ServerTestCase):
    @inlineCallbacks
    def test_get_is_200_with_body_and_validators(self):
        status, headers, body = yield self.fetch()
        self.assertEqual(status, 200)
        self.assertEqual(body, DATA)
        self.assertEqual(headers["ETag"], f'"{hashlib.sha256(DATA).hexdigest()}"')
        self.assertEqual(headers["Content-Length"], str(N))
        self.assertEqual(headers["Accept-Ranges"], "bytes")
        self.assertEqual(headers["Last-Modified"], MODIFIED_HTTP)
        self.assertEqual(headers["Cache-Control"], "private")
        self.assertEqual(headers["X-Content-Type-Options"], "nosniff")
        self.assertEqual(headers["Content-Type"], "application/octet-stream")
        self.assertIsNone(headers["Transfer-Encoding"])

    @inlineCallbacks
    def test_head_has_the_get_headers_and_no_body(self):
        status, headers, body = yield self.fetch("HEAD")
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(headers["Content-Length"], str(N))
        self.assertEqual(headers["Content-Type"], "application/octet-stream")
        self.assertIn("ETag", headers)
        self.assertIn("Content-Disposition", headers)

    @inlineCallbacks
    def test_head_ignores_range_because_ranges_are_defined_for_get_only(self):
        status, headers, body = yield self.fetch("HEAD", Range="bytes=0-9")
        self.assertEqual((status, headers["Content-Length"], body), (200, str(N), b""))

    @inlineCallbacks
    def test_curl_head(self):
        done = yield self.curl("-I", self.url())
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(b"content-length: %d" % N, done.stdout.lower())

    @inlineCallbacks
    def test_curl_downloads_a_file_backed_content_exactly(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(DATA)
        self.resource.content = make_content(read=file_reader(path))
        out = self.mktemp()
        done = yield self.curl("-o", out, self.url())
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), DATA)

    @inlineCallbacks
    def test_empty_content_is_200_with_zero_length_and_range_is_416(self):
        self.resource.content = make_content(b"")
        status, headers, body = yield self.fetch()
        self.assertEqual((status, headers["Content-Length"], body), (200, "0", b""))
        status, headers, body = yield self.fetch(Range="bytes=0-")
        self.assertEqual((status, headers["Content-Range"]), (416, "bytes */0"))


class RangeTests(ServerTestCase):
    @inlineCallbacks
    def assertRange(self, header: str, first: int, last: int):
        status, headers, body = yield self.fetch(Range=header)
        self.assertEqual(status, 206, header)
        self.assertEqual(headers["Content-Range"], f"bytes {first}-{last}/{N}")
        self.assertEqual(headers["Content-Length"], str(last - first + 1))
        self.assertEqual(body, DATA[first : last + 1])

    def test_first_last_range_is_206(self):
        return self.assertRange("bytes=10-19", 10, 19)

    def test_open_ended_range_runs_to_the_end(self):
        return self.assertRange("bytes=99990-", 99990, N - 1)

    def test_suffix_range_is_the_last_bytes(self):
        return self.assertRange("bytes=-500", N - 500, N - 1)

    def test_suffix_longer_than_content_is_the_whole_content(self):
        return self.assertRange("bytes=-999999", 0, N - 1)

    def test_last_position_past_the_end_is_clamped(self):
        return self.assertRange(f"bytes={N - 10}-{N + 100}", N - 10, N - 1)

    def test_unit_is_case_insensitive_and_whitespace_allowed(self):
        return self.assertRange("Bytes= 5-9 ,", 5, 9)

    def test_overlapping_ranges_are_coalesced_into_one(self):
        return self.assertRange("bytes=50-149,0-99", 0, 149)

    def test_ranges_closer_than_a_part_header_are_coalesced(self):
        return self.assertRange("bytes=0-9,20-29", 0, 29)

    @inlineCallbacks
    def test_separate_ranges_are_multipart_byteranges_in_ascending_order(self):
        status, headers, body = yield self.fetch(Range="bytes=-5,1000-1009,0-9")
        self.assertEqual(status, 206)
        self.assertTrue(headers["Content-Type"].startswith("multipart/byteranges; boundary="))
        self.assertEqual(int(headers["Content-Length"]), len(body))
        self.assertIsNone(headers["Content-Range"])
        self.assertEqual(
            multipart_parts(headers["Content-Type"], body),
            [
                (f"bytes 0-9/{N}", DATA[0:10]),
                (f"bytes 1000-1009/{N}", DATA[1000:1010]),
                (f"bytes {N - 5}-{N - 1}/{N}", DATA[-5:]),
            ],
        )

    @inlineCallbacks
    def test_unsatisfiable_range_is_416_with_the_size(self):
        for header in (f"bytes={N}-", f"bytes={N + 5}-{N + 9}", "bytes=-0"):
            status, headers, body = yield self.fetch(Range=header)
            self.assertEqual(status, 416, header)
            self.assertEqual(headers["Content-Range"], f"bytes */{N}")
            self.assertEqual(body, b"")
            self.assertIn("ETag", headers)

    @inlineCallbacks
    def test_satisfiable_part_of_a_range_set_is_sent(self):
        status, headers, body = yield self.fetch(Range=f"bytes={N + 5}-,0-3")
        self.assertEqual(
            (status, headers["Content-Range"], body), (206, f"bytes 0-3/{N}", DATA[:4])
        )

    @inlineCallbacks
    def test_invalid_range_is_ignored(self):
        for header in ("bytes=abc", "bytes=5-2", "items=0-1", "bytes=", "bytes=-", "0-10"):
            status, headers, body = yield self.fetch(Range=header)
            self.assertEqual((status, len(body)), (200, N), header)
            self.assertIsNone(headers["Content-Range"])

    @inlineCallbacks
    def test_curl_r_range(self):
        done = yield self.curl("-r", "100-199", self.url())
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout, DATA[100:200])

    @inlineCallbacks
    def test_curl_multiple_ranges(self):
        headers = self.mktemp()
        done = yield self.curl("-r", "0-9,5000-5009", "-D", headers, self.url())
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(headers, "rb") as f:
            head = email.message_from_bytes(f.read().split(b"\r\n", 1)[1])
        self.assertEqual(
            multipart_parts(head["Content-Type"], done.stdout),
            [(f"bytes 0-9/{N}", DATA[:10]), (f"bytes 5000-5009/{N}", DATA[5000:5010])],
        )

    @inlineCallbacks
    def test_curl_416(self):
        done = yield self.curl("-w", "%{http_code}", "-r", f"{N}-", self.url())
        self.assertEqual((done.returncode, done.stdout), (0, b"416"))

    @inlineCallbacks
    def test_curl_resume_completes_a_partial_file(self):
        out = self.mktemp()
        with open(out, "wb") as f:
            f.write(DATA[:12345])
        done = yield self.curl("-C", "-", "-o", out, self.url())
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), DATA)


class ConditionalTests(ServerTestCase):
    etag = f'"{hashlib.sha256(DATA).hexdigest()}"'

    @inlineCallbacks
    def test_if_range_with_the_etag_honours_the_range(self):
        status, headers, body = yield self.fetch(Range="bytes=0-9", If_Range=self.etag)
        self.assertEqual((status, body), (206, DATA[:10]))

    @inlineCallbacks
    def test_if_range_with_another_or_weak_etag_sends_everything(self):
        for value in ('"other"', "W/" + self.etag):
            status, headers, body = yield self.fetch(Range="bytes=0-9", If_Range=value)
            self.assertEqual((status, body), (200, DATA), value)

    @inlineCallbacks
    def test_if_range_with_last_modified_honours_the_range(self):
        status, headers, body = yield self.fetch(Range="bytes=0-9", If_Range=MODIFIED_HTTP)
        self.assertEqual((status, body), (206, DATA[:10]))

    @inlineCallbacks
    def test_if_range_with_another_date_sends_everything(self):
        for value in ("Thu, 02 Jan 2020 03:04:06 GMT", "not a date"):
            status, headers, body = yield self.fetch(Range="bytes=0-9", If_Range=value)
            self.assertEqual((status, body), (200, DATA), value)

    @inlineCallbacks
    def test_if_range_date_of_a_content_modified_this_second_is_weak(self):
        now = datetime.now(UTC).replace(microsecond=0)
        self.resource.content = make_content(modified=now)
        date = datetimeToString(int(now.timestamp())).decode()
        status, headers, body = yield self.fetch(Range="bytes=0-9", If_Range=date)
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_if_none_match_with_the_etag_is_304_without_body(self):
        for value in (self.etag, "*", "W/" + self.etag, f'"x", {self.etag}'):
            status, headers, body = yield self.fetch(If_None_Match=value)
            self.assertEqual((status, body), (304, b""), value)
            self.assertEqual(headers["ETag"], self.etag)
            self.assertEqual(headers["Last-Modified"], MODIFIED_HTTP)
            self.assertIsNone(headers["Content-Type"])

    @inlineCallbacks
    def test_if_none_match_with_another_etag_is_200(self):
        status, headers, body = yield self.fetch(If_None_Match='"x", W/"y"')
        self.assertEqual((status, body), (200, DATA))

    @inlineCallbacks
    def test_if_match_with_another_etag_is_412(self):
        for value in ('"x"', "W/" + self.etag):
            status, headers, body = yield self.fetch(If_Match=value, Range="bytes=0-1")
            self.assertEqual((status, body), (412, b""), value)
            self.assertEqual(headers["ETag"], self.etag)

    @inlineCallbacks
    def test_if_match_with_the_etag_is_served(self):
        for value in (self.etag, "*"):
            status, headers, body = yield self.fetch(If_Match=value)
            self.assertEqual((status, body), (200, DATA))

    @inlineCallbacks
    def test_if_unmodified_since_an_earlier_date_is_412(self):
        status, _, _ = yield self.fetch(If_Unmodified_Since="Wed, 01 Jan 2020 00:00:00 GMT")
        self.assertEqual(status, 412)

    @inlineCallbacks
    def test_curl_z_is_304_when_not_modified_and_200_when_modified(self):
        done = yield self.curl("-w", "%{http_code}", "-z", MODIFIED_HTTP, self.url())
        self.assertEqual((done.returncode, done.stdout), (0, b"304"))
        done = yield self.curl("-z", "Wed, 01 Jan 2020 00:00:00 GMT", self.url())
        self.assertEqual((done.returncode, done.stdout), (0, DATA))


class DispositionTests(ServerTestCase):
    @inlineCallbacks
    def test_non_ascii_name_has_utf8_filename_star_and_ascii_fallback(self):
        name = "Résumé — 2024 ünï 文件.pdf"
        self.resource.content = make_content(name=name)
        _, headers, _ = yield self.fetch()
        self.assertEqual(
            headers["Content-Disposition"],
            'attachment; filename="Resume _ 2024 uni __.pdf"; '
            "filename*=UTF-8''R%C3%A9sum%C3%A9%20%E2%80%94%202024%20%C3%BCn%C3%AF%20"
            "%E6%96%87%E4%BB%B6.pdf",
        )
        self.assertEqual(
            disposition_filenames(headers["Content-Disposition"]),
            ("Resume _ 2024 uni __.pdf", name),
        )

    @inlineCallbacks
    def test_quotes_and_backslashes_are_escaped_in_the_fallback(self):
        name = 'say "hi"\\there.txt'
        self.resource.content = make_content(name=name)
        self.resource.disposition = "inline"
        _, headers, _ = yield self.fetch()
        self.assertEqual(
            headers["Content-Disposition"],
            'inline; filename="say \\"hi\\"\\\\there.txt"; '
            "filename*=UTF-8''say%20%22hi%22%5Cthere.txt",
        )
        self.assertEqual(disposition_filenames(headers["Content-Disposition"]), (name, name))

    @inlineCallbacks
    def test_no_name_is_a_bare_disposition(self):
        self.resource.content = make_content(name=None)
        _, headers, _ = yield self.fetch()
        self.assertEqual(headers["Content-Disposition"], "attachment")


class StreamingTests(ServerTestCase):
    timeout = 120

    def big_file(self, size: int) -> tuple[str, bytes]:
        path = self.mktemp()
        data = random.Random(2).randbytes(size)
        with open(path, "wb") as f:
            f.write(data)
        return path, data

    def serve_file(self, path: str, data: bytes, read=None) -> Reads:
        reads = Reads(read or file_reader(path))
        self.resource.reads = reads
        self.resource.content = make_content(data, read=reads.read)
        return reads

    @inlineCallbacks
    def wait_until_stable(self, reads: Reads, quiet: float = 0.5):
        """Wait until no read has started for ``quiet`` seconds."""
        seen = -1
        for _ in range(100):
            if len(reads.calls) == seen and reads.outstanding == 0:
                return
            seen = len(reads.calls)
            yield deferLater(reactor, quiet, lambda: None)
        self.fail("reads never stopped")

    @inlineCallbacks
    def test_64_mib_streams_in_256_kib_reads_at_most_one_ahead(self):
        size = 64 * 1024 * 1024
        path, data = self.big_file(size)
        reads = self.serve_file(path, data)

        def download():
            conn = http.client.HTTPConnection("127.0.0.1", self.portno, timeout=60)
            try:
                conn.request("GET", "/file")
                response = conn.getresponse()
                digest, total = hashlib.sha256(), 0
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    total += len(chunk)
                return response.status, total, digest.hexdigest()
            finally:
                conn.close()

        status, total, digest = yield deferToThread(download)
        self.assertEqual((status, total), (200, size))
        self.assertEqual(digest, hashlib.sha256(data).hexdigest())
        self.assertEqual(reads.calls, [(o, CHUNK_SIZE) for o in range(0, size, CHUNK_SIZE)])
        self.assertEqual(reads.max_outstanding, 1)
        self.assertLessEqual(reads.max_ahead, 2)

    @inlineCallbacks
    def test_slow_client_stops_the_reads_then_disconnect_ends_them(self):
        size = 64 * 1024 * 1024
        path, data = self.big_file(size)
        reads = self.serve_file(path, data)

        def start():
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(30)
            sock.connect(("127.0.0.1", self.portno))
            sock.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
            return sock, sock.recv(1024)

        sock, first = yield deferToThread(start)
        self.addCleanup(sock.close)
        self.assertTrue(first.startswith(b"HTTP/1.1 200 "))
        yield self.wait_until_stable(reads)
        stalled = len(reads.calls)
        # Socket buffers hold a few MiB at most; the rest of the 64 MiB must not have been read.
        self.assertLess(stalled * CHUNK_SIZE, 16 * 1024 * 1024)
        self.assertLessEqual(reads.max_ahead, 2)

        # Draining a little lets the server read a little more: it was paused, not stuck.
        def drain(n: int) -> int:
            got = 0
            while got < n:
                got += len(sock.recv(65536))
            return got

        yield deferToThread(drain, 8 * 1024 * 1024)
        yield self.wait_until_stable(reads)
        self.assertGreater(len(reads.calls), stalled)
        self.assertLess(len(reads.calls), size // CHUNK_SIZE)

        sock.close()
        for _ in range(500):
            if reads.at_disconnect is not None:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertIsNotNone(reads.at_disconnect, "the server never saw the disconnect")
        yield deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(len(reads.calls), reads.at_disconnect)
        self.assertEqual(reads.outstanding, 0)

    @inlineCallbacks
    def test_client_disconnect_mid_stream_stops_reads(self):
        size = 64 * 1024 * 1024
        path, data = self.big_file(size)
        reads = self.serve_file(path, data)

        def read_some_then_close():
            conn = http.client.HTTPConnection("127.0.0.1", self.portno, timeout=60)
            conn.request("GET", "/file")
            response = conn.getresponse()
            got = response.read(2 * 1024 * 1024)
            response.close()
            conn.close()
            return got

        got = yield deferToThread(read_some_then_close)
        self.assertEqual(got, data[: len(got)])
        for _ in range(500):
            if reads.at_disconnect is not None:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertIsNotNone(reads.at_disconnect)
        yield deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(len(reads.calls), reads.at_disconnect)
        self.assertLess(len(reads.calls), size // CHUNK_SIZE)

    @inlineCallbacks
    def test_read_failure_mid_stream_cuts_the_body_short_and_logs_once(self):
        size = 4 * 1024 * 1024
        path, data = self.big_file(size)
        good = file_reader(path)

        def breaking(offset, length):
            if offset >= 1024 * 1024:  # as a disk does: later, not in the same call
                return deferLater(reactor, 0.05, lambda: fail(ReadFailed("disk gone")))
            return good(offset, length)

        reads = self.serve_file(path, data, read=breaking)
        got, declared, error = yield deferToThread(read_until_error, self.portno)
        self.assertEqual(declared, size)
        self.assertIsNotNone(error)
        self.assertLess(len(got), size)
        self.assertEqual(got, data[: len(got)])
        self.assertEqual(len(self.flushLoggedErrors(ReadFailed)), 1)
        self.assertEqual(reads.calls[-1][0], 1024 * 1024)

    @inlineCallbacks
    def test_curl_reports_a_partial_file_when_a_read_fails(self):
        size = 2 * 1024 * 1024
        path, data = self.big_file(size)
        good = file_reader(path)

        def breaking(offset, length):
            return fail(ReadFailed("bad")) if offset else good(offset, length)

        self.serve_file(path, data, read=breaking)
        done = yield self.curl(self.url())
        self.assertIn(done.returncode, (18, 56), done.stderr)  # partial file / recv failure
        self.assertEqual(done.stdout, data[: len(done.stdout)])
        self.assertLess(len(done.stdout), size)
        self.assertEqual(len(self.flushLoggedErrors(ReadFailed)), 1)

    @inlineCallbacks
    def test_read_failure_before_any_byte_is_500(self):
        self.resource.content = make_content(read=lambda o, n: fail(ReadFailed("bad")))
        status, headers, body = yield self.fetch()
        self.assertEqual((status, body), (500, b""))
        self.assertIsNone(headers["Content-Range"])
        self.assertEqual(len(self.flushLoggedErrors(ReadFailed)), 1)

    @inlineCallbacks
    def test_short_read_is_treated_as_a_failure(self):
        self.resource.content = make_content(read=lambda o, n: succeed(b""))
        status, _, body = yield self.fetch()
        self.assertEqual((status, body), (500, b""))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class PureFunctionTests(SynchronousTestCase):
    def test_parse_range_forms(self):
        self.assertEqual(parse_range("bytes=0-9"), [(0, 9)])
        self.assertEqual(parse_range("bytes=5-"), [(5, None)])
        self.assertEqual(parse_range("bytes=-7"), [(None, 7)])
        self.assertEqual(parse_range("bytes=0-0, -1"), [(0, 0), (None, 1)])

    def test_parse_range_rejects_invalid_specs(self):
        for value in ("bytes=9-0", "bytes=a-", "bytes=--1", "bytes=1-2-3", "pages=1-2", "bytes"):
            self.assertIsNone(parse_range(value), value)

    def test_content_disposition_replaces_controls_in_the_fallback(self):
        self.assertEqual(
            content_disposition("attachment", "a\r\nb"),
            b"attachment; filename=\"a__b\"; filename*=UTF-8''a%0D%0Ab",
        )

    def test_send_rejects_an_unknown_disposition(self):
        self.assertRaises(ValueError, send, None, make_content(), disposition="evil")
