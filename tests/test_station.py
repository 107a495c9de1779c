"""The file-transfer station served by the real appliance on loopback: tus uploads with an
unmodified client (tuspy) and HTTP Basic, then downloads with ranges (urllib, curl)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import os
import subprocess
import urllib.error
import urllib.request

from sqlalchemy import select, update
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailbox_appliance.store import schema
from tests.support.appliance import PASSWORD, add_account, port_of, started_appliance

BASIC = "Basic " + base64.b64encode(f"alice@example.test:{PASSWORD}".encode()).decode()


class StationTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.appliance = yield started_appliance(self, ("http",))
        self.alice = yield add_account(self.appliance, "alice@example.test")
        self.base = f"http://127.0.0.1:{port_of(self.appliance, 'http')}/files/"

    def upload(self, data: bytes, name: str = "report.pdf", chunk: int = 1024 * 1024):
        from tusclient import client

        def run():
            tus = client.TusClient(self.base, headers={"Authorization": BASIC})
            uploader = tus.uploader(
                file_stream=io.BytesIO(data), chunk_size=chunk, metadata={"filename": name}
            )
            uploader.upload()
            return uploader.url

        return deferToThread(run)

    def get(self, url: str, headers: dict | None = None):
        def run():
            request = urllib.request.Request(
                url, headers={"Authorization": BASIC, **(headers or {})}
            )
            try:
                with urllib.request.urlopen(request, timeout=20) as response:
                    return response.status, dict(response.headers), response.read()
            except urllib.error.HTTPError as e:
                return e.code, dict(e.headers), e.read()

        return deferToThread(run)

    @inlineCallbacks
    def test_a_tuspy_upload_is_stored_and_downloads_byte_exact_with_ranges(self):
        data = os.urandom(3 * 1024 * 1024 + 123)
        url = yield self.upload(data, "Quarterly report é.pdf")
        status, headers, body = yield self.get(url)
        self.assertEqual(status, 200)
        self.assertEqual(hashlib.sha256(body).digest(), hashlib.sha256(data).digest())
        self.assertEqual(headers["ETag"], f'"{hashlib.sha256(data).hexdigest()}"')
        self.assertIn(
            "filename*=UTF-8''Quarterly%20report%20%C3%A9.pdf", headers["Content-Disposition"]
        )
        status, headers, body = yield self.get(url, {"Range": "bytes=1000-1999"})
        self.assertEqual((status, body), (206, data[1000:2000]))
        self.assertEqual(headers["Content-Range"], f"bytes 1000-1999/{len(data)}")
        (file,) = yield self.appliance.store.list_files(self.alice)
        self.assertEqual((file["name"], file["size"]), ("Quarterly report é.pdf", len(data)))

    @inlineCallbacks
    def test_the_same_content_twice_is_stored_once(self):
        data = os.urandom(300 * 1024)
        yield self.upload(data, "a.bin")
        yield self.upload(data, "b.bin")
        files = yield self.appliance.store.list_files(self.alice)
        self.assertEqual(sorted(f["name"] for f in files), ["a.bin", "b.bin"])
        b = schema.blobs
        query = select(b.c.refcount).where(b.c.sha256 == hashlib.sha256(data).hexdigest())
        refcount = yield self.appliance.store.db.read(lambda conn: conn.execute(query).scalar())
        self.assertEqual(refcount, 2)

    @inlineCallbacks
    def test_without_credentials_the_station_answers_401(self):
        def run():
            request = urllib.request.Request(
                self.base,
                method="POST",
                headers={"Tus-Resumable": "1.0.0", "Upload-Length": "10"},
            )
            try:
                urllib.request.urlopen(request, timeout=20)
            except urllib.error.HTTPError as e:
                return e.code, e.headers.get("WWW-Authenticate")

        self.assertEqual((yield deferToThread(run)), (401, 'Basic realm="files"'))

    @inlineCallbacks
    def test_curl_resumes_a_download(self):
        data = os.urandom(512 * 1024)
        url = yield self.upload(data, "resume.bin")
        target = os.path.abspath(self.mktemp())
        with open(target, "wb") as f:
            f.write(data[:100000])  # an interrupted earlier download

        def run():
            return subprocess.run(
                ["curl", "-sS", "-C", "-", "-H", f"Authorization: {BASIC}", "-o", target, url],
                capture_output=True,
                timeout=30,
            )

        result = yield deferToThread(run)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(target, "rb") as f:
            self.assertEqual(f.read(), data)

    @inlineCallbacks
    def test_expired_station_files_are_reaped_by_the_background_sweep(self):
        yield self.upload(os.urandom(1000), "old.bin")
        f = schema.files
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        yield self.appliance.store.db.write(
            lambda conn: conn.execute(update(f).values(expires=past))
        )
        yield self.appliance._collect_garbage()
        self.assertEqual((yield self.appliance.store.list_files(self.alice)), [])
