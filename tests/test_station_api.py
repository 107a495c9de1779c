"""The station's JSON API, cookie sessions and share links, served by the real appliance on
loopback and used with real clients (tuspy for uploads, http.client for the rest)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import io
import json
import os
import urllib.parse

from sqlalchemy import update
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailbox_appliance.store import schema
from tests.support.appliance import (
    PASSWORD,
    add_account,
    insecure_tls,
    port_of,
    started_appliance,
)
from tests.support.databases import postgres_url

ALICE = "alice@example.test"
BOB = "bob@example.test"


def basic(address: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{address}:{password}".encode()).decode()


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


class StationAPITestCase(TestCase):
    timeout = 60

    def configuration(self) -> dict:
        # No held-back replies: wrong passwords are part of the tests.
        return {"auth": {"throttle": {"delay": 0.0}}}

    @inlineCallbacks
    def setUp(self):
        self.appliance = yield started_appliance(self, ("http",), **self.configuration())
        self.alice = yield add_account(self.appliance, ALICE)
        self.bob = yield add_account(self.appliance, BOB)
        self.port = port_of(self.appliance, "http")
        self.origin = f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body=None, headers: dict | None = None) -> Response:
        """One request on a new connection, in a thread; ``body`` may be a dict (JSON)."""
        headers = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")

        def run():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return Response(response.status, response.headers, response.read())
            finally:
                conn.close()

        return deferToThread(run)

    def upload(self, data: bytes, name: str, address: str = ALICE):
        from tusclient import client

        def run():
            tus = client.TusClient(
                f"{self.origin}/files/", headers={"Authorization": basic(address)}
            )
            uploader = tus.uploader(
                file_stream=io.BytesIO(data), chunk_size=1024 * 1024, metadata={"filename": name}
            )
            uploader.upload()

        return deferToThread(run)

    @inlineCallbacks
    def uploaded_file(self, data: bytes, name: str = "report.pdf", address: str = ALICE):
        """Upload ``data`` with tuspy; the file's row."""
        yield self.upload(data, name, address)
        owner = self.alice if address == ALICE else self.bob
        files = yield self.appliance.store.list_files(owner)
        return next(f for f in files if f["name"] == name)

    @inlineCallbacks
    def login(self, address: str = ALICE, password: str = PASSWORD):
        """Log in with JSON; the cookie header value to send back."""
        response = yield self.request(
            "POST", "/api/login", {"address": address, "password": password}
        )
        self.assertEqual(response.status, 200, response.body)
        cookie = response.headers["Set-Cookie"]
        return cookie.split(";", 1)[0]


class SessionTests(StationAPITestCase):
    @inlineCallbacks
    def test_login_sets_an_httponly_strict_cookie_that_lists_the_files(self):
        data = os.urandom(70 * 1024)
        file = yield self.uploaded_file(data, "notes.txt")
        response = yield self.request(
            "POST", "/api/login", {"address": ALICE, "password": PASSWORD}
        )
        self.assertEqual((response.status, response.json()), (200, {"address": ALICE}))
        cookie = response.headers["Set-Cookie"]
        name, _, rest = cookie.partition("=")
        token = rest.split(";", 1)[0]
        self.assertEqual(name, "station_session")
        self.assertGreaterEqual(len(base64.urlsafe_b64decode(token + "==")), 16)  # >= 128 bits
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        self.assertTrue({"httponly", "samesite=strict", "path=/"} <= attributes, attributes)
        self.assertNotIn("secure", attributes)  # plain http (loopback): Secure would lose it

        headers = {"Cookie": cookie.split(";", 1)[0]}
        response = yield self.request("GET", "/api/files", headers=headers)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["Cache-Control"], "no-store")
        (listed,) = response.json()["files"]
        self.assertEqual(
            {k: listed[k] for k in ("id", "name", "size", "kind", "url")},
            {
                "id": file["id"],
                "name": "notes.txt",
                "size": len(data),
                "kind": "station",
                "url": f"/api/files/{file['id']}/content",
            },
        )
        self.assertTrue(listed["created"].endswith("Z") and listed["expires"].endswith("Z"))

        response = yield self.request("GET", "/api/me", headers=headers)
        me = response.json()
        self.assertEqual((me["address"], me["station"]["used"]), (ALICE, len(data)))
        self.assertEqual(me["station"]["capacity"], self.appliance.config.transfer.station_capacity)

    @inlineCallbacks
    def test_a_form_login_works_and_a_wrong_password_is_401(self):
        form = urllib.parse.urlencode({"address": ALICE, "password": "wrong"}).encode()
        form_type = {"Content-Type": "application/x-www-form-urlencoded"}
        response = yield self.request("POST", "/api/login", form, form_type)
        self.assertEqual(response.status, 401)
        self.assertNotIn("Set-Cookie", response.headers)
        self.assertIn("error", response.json())
        form = urllib.parse.urlencode({"address": ALICE, "password": PASSWORD}).encode()
        response = yield self.request("POST", "/api/login", form, form_type)
        self.assertEqual(response.status, 200)
        self.assertIn("station_session=", response.headers["Set-Cookie"])

    @inlineCallbacks
    def test_a_login_without_fields_is_400(self):
        response = yield self.request("POST", "/api/login", {"address": ALICE})
        self.assertEqual(response.status, 400)
        self.assertIn("address and password", response.json()["error"])

    @inlineCallbacks
    def test_logout_ends_the_session(self):
        cookie = yield self.login()
        proof = {"Cookie": cookie, "X-Requested-With": "XMLHttpRequest"}
        response = yield self.request("POST", "/api/logout", headers=proof)
        self.assertEqual((response.status, response.json()), (200, {"logged_out": True}))
        self.assertIn("Max-Age=0", response.headers["Set-Cookie"])
        response = yield self.request("GET", "/api/me", headers={"Cookie": cookie})
        self.assertEqual(response.status, 401)

    @inlineCallbacks
    def test_an_idle_session_expires_after_twelve_hours(self):
        cookie = yield self.login()
        sessions = self.appliance.http_authenticator.sessions
        for session in sessions._open.values():
            session.expires = self.appliance.reactor.seconds() - 1
        response = yield self.request("GET", "/api/me", headers={"Cookie": cookie})
        self.assertEqual(response.status, 401)

    @inlineCallbacks
    def test_without_credentials_the_api_answers_401_with_a_reason(self):
        response = yield self.request("GET", "/api/files")
        self.assertEqual(response.status, 401)
        self.assertEqual(response.headers["WWW-Authenticate"], 'Basic realm="files"')
        self.assertIn("log in", response.json()["error"])
        # The page's scripts get no challenge, so the browser shows no password dialog.
        response = yield self.request(
            "GET", "/api/files", headers={"X-Requested-With": "XMLHttpRequest"}
        )
        self.assertEqual(response.status, 401)
        self.assertNotIn("WWW-Authenticate", response.headers)
        response = yield self.request(
            "GET", "/api/files", headers={"Cookie": "station_session=not-a-session"}
        )
        self.assertEqual(response.status, 401)

    @inlineCallbacks
    def test_basic_over_plain_http_from_loopback_works(self):
        response = yield self.request("GET", "/api/me", headers={"Authorization": basic(ALICE)})
        self.assertEqual((response.status, response.json()["address"]), (200, ALICE))
        response = yield self.request(
            "GET", "/api/me", headers={"Authorization": basic(ALICE, "wrong")}
        )
        self.assertEqual(response.status, 401)

    @inlineCallbacks
    def test_a_cookie_authenticated_change_needs_a_same_origin_proof(self):
        file = yield self.uploaded_file(os.urandom(2000), "csrf.bin")
        cookie = yield self.login()
        path = f"/api/files/{file['id']}/shares"
        refused = [
            {},
            {"Origin": "http://evil.example"},
            {"Origin": f"http://127.0.0.1:{self.port + 1}"},  # same site, other origin
            {"Sec-Fetch-Site": "cross-site", "X-Requested-With": "XMLHttpRequest"},
            {"Sec-Fetch-Site": "same-site"},
        ]
        for extra in refused:
            response = yield self.request("POST", path, {}, {"Cookie": cookie, **extra})
            self.assertEqual(response.status, 403, extra)
            self.assertIn("error", response.json())
        response = yield self.request(
            "DELETE", f"/api/files/{file['id']}", None, {"Cookie": cookie}
        )
        self.assertEqual(response.status, 403)
        self.assertEqual((yield self.appliance.store.shares(file["id"])), [])
        self.assertIsNotNone((yield self.appliance.store.file(file["id"])))

        accepted = [
            {"X-Requested-With": "XMLHttpRequest"},
            {"Origin": self.origin},
            {"Sec-Fetch-Site": "same-origin"},
        ]
        for extra in accepted:
            response = yield self.request("POST", path, {}, {"Cookie": cookie, **extra})
            self.assertEqual(response.status, 201, extra)
        # Reading needs no proof, and Basic needs none (a browser never adds it by itself).
        response = yield self.request("GET", path, headers={"Cookie": cookie})
        self.assertEqual(len(response.json()["shares"]), 3)
        response = yield self.request("POST", path, {}, {"Authorization": basic(ALICE)})
        self.assertEqual(response.status, 201)

    @inlineCallbacks
    def test_a_login_from_another_origin_is_refused(self):
        response = yield self.request(
            "POST",
            "/api/login",
            {"address": ALICE, "password": PASSWORD},
            {"Origin": "http://evil.example"},
        )
        self.assertEqual(response.status, 403)
        self.assertNotIn("Set-Cookie", response.headers)

    @inlineCallbacks
    def test_the_session_cookie_also_authenticates_tus_uploads(self):
        cookie = yield self.login()
        response = yield self.request(
            "POST",
            "/files/",
            headers={
                "Cookie": cookie,
                "Tus-Resumable": "1.0.0",
                "Upload-Length": "5",
                "Origin": self.origin,
            },
        )
        self.assertEqual(response.status, 201, response.body)
        response = yield self.request(
            "POST",
            "/files/",
            headers={"Cookie": cookie, "Tus-Resumable": "1.0.0", "Upload-Length": "5"},
        )
        self.assertEqual(response.status, 401)  # no same-origin proof


class FileTests(StationAPITestCase):
    @inlineCallbacks
    def test_a_file_downloads_with_ranges_and_head(self):
        data = os.urandom(600 * 1024 + 7)
        file = yield self.uploaded_file(data, "Bericht é.pdf")
        auth = {"Authorization": basic(ALICE)}
        url = f"/api/files/{file['id']}/content"
        response = yield self.request("GET", url, headers=auth)
        self.assertEqual(response.status, 200)
        self.assertEqual(hashlib.sha256(response.body).digest(), hashlib.sha256(data).digest())
        self.assertEqual(response.headers["ETag"], f'"{hashlib.sha256(data).hexdigest()}"')
        self.assertIn(
            "filename*=UTF-8''Bericht%20%C3%A9.pdf", response.headers["Content-Disposition"]
        )
        response = yield self.request("GET", url, headers={**auth, "Range": "bytes=300000-300999"})
        self.assertEqual((response.status, response.body), (206, data[300000:301000]))
        self.assertEqual(response.headers["Content-Range"], f"bytes 300000-300999/{len(data)}")
        response = yield self.request("HEAD", url, headers=auth)
        self.assertEqual((response.status, response.body), (200, b""))
        self.assertEqual(response.headers["Content-Length"], str(len(data)))

    @inlineCallbacks
    def test_a_small_inline_file_downloads_too(self):
        file = yield self.uploaded_file(b"tiny", "tiny.txt")
        response = yield self.request(
            "GET", f"/api/files/{file['id']}/content", headers={"Authorization": basic(ALICE)}
        )
        self.assertEqual((response.status, response.body), (200, b"tiny"))

    @inlineCallbacks
    def test_delete_removes_the_file(self):
        file = yield self.uploaded_file(os.urandom(5000), "gone.bin")
        auth = {"Authorization": basic(ALICE)}
        response = yield self.request("DELETE", f"/api/files/{file['id']}", headers=auth)
        self.assertEqual((response.status, response.body), (204, b""))
        response = yield self.request("GET", f"/api/files/{file['id']}/content", headers=auth)
        self.assertEqual(response.status, 404)
        response = yield self.request("GET", "/api/files", headers=auth)
        self.assertEqual(response.json(), {"files": []})
        response = yield self.request("DELETE", f"/api/files/{file['id']}", headers=auth)
        self.assertEqual(response.status, 404)

    @inlineCallbacks
    def test_another_accounts_file_is_404(self):
        file = yield self.uploaded_file(os.urandom(3000), "bobs.bin", address=BOB)
        auth = {"Authorization": basic(ALICE)}
        for method, suffix in [
            ("GET", ""),
            ("GET", "/content"),
            ("DELETE", ""),
            ("GET", "/shares"),
            ("POST", "/shares"),
        ]:
            response = yield self.request(method, f"/api/files/{file['id']}{suffix}", None, auth)
            self.assertEqual(response.status, 404, (method, suffix))
        self.assertIsNotNone((yield self.appliance.store.file(file["id"])))

    @inlineCallbacks
    def test_the_fast_path_makes_a_file_of_content_the_account_already_holds(self):
        data = os.urandom(40 * 1024)
        yield self.uploaded_file(data, "first.bin")
        claim = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "name": "again.bin"}
        auth = {"Authorization": basic(ALICE)}
        response = yield self.request("POST", "/api/files", claim, auth)
        self.assertEqual(response.status, 201, response.body)
        body = response.json()
        self.assertEqual((body["name"], body["size"]), ("again.bin", len(data)))
        self.assertEqual(response.headers["Location"], f"/api/files/{body['id']}")
        response = yield self.request("GET", body["url"], headers=auth)
        self.assertEqual(response.body, data)

    @inlineCallbacks
    def test_the_fast_path_never_reveals_another_accounts_content(self):
        data = os.urandom(40 * 1024)
        yield self.uploaded_file(data, "bobs.bin", address=BOB)
        claim = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "name": "x.bin"}
        response = yield self.request("POST", "/api/files", claim, {"Authorization": basic(ALICE)})
        self.assertEqual(response.status, 404)
        self.assertEqual((yield self.appliance.store.list_files(self.alice)), [])

    @inlineCallbacks
    def test_bad_input_is_400_with_a_reason(self):
        auth = {"Authorization": basic(ALICE)}
        for body in [
            {"sha256": "xyz", "size": 1, "name": "a"},
            {"sha256": "0" * 64, "size": -1, "name": "a"},
            {"sha256": "0" * 64, "size": True, "name": "a"},
            {"sha256": "0" * 64, "size": 1, "name": ""},
        ]:
            response = yield self.request("POST", "/api/files", body, auth)
            self.assertEqual(response.status, 400, body)
            self.assertIn("error", response.json())
        response = yield self.request("POST", "/api/files", b"{not json", auth)
        self.assertEqual(
            (response.status, response.json()), (400, {"error": "the body is not JSON"})
        )
        response = yield self.request("PUT", "/api/files", b"", auth)
        self.assertEqual(response.status, 405)
        self.assertEqual(response.headers["Allow"], "GET, POST")
        response = yield self.request("GET", "/api/nothing", headers=auth)
        self.assertEqual(response.status, 404)


class CloudDriveTests(StationAPITestCase):
    CLOUD = 100 * 1024

    def configuration(self) -> dict:
        return {**super().configuration(), "transfer": {"cloud_capacity": self.CLOUD}}

    def move(self, file_id: str, body, headers: dict | None = None):
        return self.request(
            "PATCH", f"/api/files/{file_id}", body, headers or {"Authorization": basic(ALICE)}
        )

    @inlineCallbacks
    def usage(self) -> dict:
        response = yield self.request("GET", "/api/me", headers={"Authorization": basic(ALICE)})
        me = response.json()
        return {where: (me[where]["used"], me[where]["capacity"]) for where in ("station", "cloud")}

    @inlineCallbacks
    def test_a_file_moves_to_the_cloud_drive_and_back(self):
        data = os.urandom(60 * 1024)
        file = yield self.uploaded_file(data, "kept.bin")
        station = self.appliance.config.transfer.station_capacity
        self.assertEqual(
            (yield self.usage()), {"station": (len(data), station), "cloud": (0, self.CLOUD)}
        )

        response = yield self.move(file["id"], {"kind": "cloud"})
        self.assertEqual(response.status, 200, response.body)
        kept = response.json()
        self.assertEqual((kept["id"], kept["kind"], kept["expires"]), (file["id"], "cloud", None))
        listed = yield self.request("GET", "/api/files", headers={"Authorization": basic(ALICE)})
        self.assertEqual(listed.json()["files"], [kept])
        self.assertEqual(
            (yield self.usage()), {"station": (0, station), "cloud": (len(data), self.CLOUD)}
        )
        self.assertIsNone((yield self.appliance.store.file(file["id"]))["expires"])

        before = datetime.datetime.now(datetime.UTC)
        response = yield self.move(file["id"], {"kind": "station"})
        self.assertEqual(response.status, 200, response.body)
        back = response.json()
        self.assertEqual(back["kind"], "station")
        lifetime = datetime.timedelta(seconds=self.appliance.config.transfer.file_expires)
        expires = datetime.datetime.fromisoformat(back["expires"])
        self.assertTrue(
            before + lifetime <= expires <= datetime.datetime.now(datetime.UTC) + lifetime
        )
        self.assertEqual(
            (yield self.usage()), {"station": (len(data), station), "cloud": (0, self.CLOUD)}
        )

    @inlineCallbacks
    def test_over_the_cloud_drive_capacity_is_413_with_the_reason(self):
        first = yield self.uploaded_file(os.urandom(60 * 1024), "first.bin")
        second = yield self.uploaded_file(os.urandom(60 * 1024), "second.bin")
        self.assertEqual((yield self.move(first["id"], {"kind": "cloud"})).status, 200)
        response = yield self.move(second["id"], {"kind": "cloud"})
        self.assertEqual(response.status, 413)
        self.assertEqual(
            response.json()["error"],
            f"over the cloud drive capacity of {self.CLOUD} bytes for this account"
            f" ({60 * 1024} bytes in use, {60 * 1024} more asked for)",
        )
        self.assertEqual((yield self.appliance.store.file(second["id"])), second)

    @inlineCallbacks
    def test_a_bad_body_is_400_and_another_accounts_file_404(self):
        file = yield self.uploaded_file(os.urandom(1000), "mine.bin")
        for body in ({}, {"kind": "attic"}, {"kind": ["cloud"]}, {"kind": None}, b"{not json"):
            response = yield self.move(file["id"], body)
            self.assertEqual(response.status, 400, body)
            self.assertIn("error", response.json())
        bobs = yield self.uploaded_file(os.urandom(1000), "bobs.bin", address=BOB)
        for file_id in (bobs["id"], "A" * 32):
            response = yield self.move(file_id, {"kind": "cloud"})
            self.assertEqual((response.status, response.json()), (404, {"error": "no such file"}))
        self.assertEqual((yield self.appliance.store.file(bobs["id"])), bobs)
        self.assertEqual((yield self.appliance.store.file(file["id"])), file)

    @inlineCallbacks
    def test_an_expired_station_file_is_410(self):
        file = yield self.uploaded_file(os.urandom(1000), "old.bin")
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
        files = schema.files
        yield self.appliance.store.db.write(
            lambda conn: conn.execute(
                update(files).where(files.c.id == file["id"]).values(expires=past)
            )
        )
        response = yield self.move(file["id"], {"kind": "cloud"})
        self.assertEqual(response.status, 410)
        self.assertIn("expired", response.json()["error"])

    @inlineCallbacks
    def test_a_cookie_authenticated_move_needs_a_same_origin_proof(self):
        file = yield self.uploaded_file(os.urandom(1000), "csrf.bin")
        cookie = yield self.login()
        response = yield self.move(file["id"], {"kind": "cloud"}, {"Cookie": cookie})
        self.assertEqual(response.status, 403)
        self.assertEqual((yield self.appliance.store.file(file["id"]))["kind"], "station")
        proof = {"Cookie": cookie, "X-Requested-With": "XMLHttpRequest"}
        response = yield self.move(file["id"], {"kind": "cloud"}, proof)
        self.assertEqual((response.status, response.json()["kind"]), (200, "cloud"))
        response = yield self.request("OPTIONS", f"/api/files/{file['id']}", headers=proof)
        self.assertEqual(response.headers["Allow"], "DELETE, GET, PATCH, OPTIONS")


class ShareLinkTests(StationAPITestCase):
    @inlineCallbacks
    def share(self, file_id: str, **body):
        response = yield self.request(
            "POST", f"/api/files/{file_id}/shares", body, {"Authorization": basic(ALICE)}
        )
        self.assertEqual(response.status, 201, response.body)
        return response.json()

    @inlineCallbacks
    def test_a_password_protected_link(self):
        data = os.urandom(90 * 1024)
        file = yield self.uploaded_file(data, "<img src=x onerror=alert(1)> & co.pdf")
        link = yield self.share(file["id"], password="open sesame", expires_days=2)
        self.assertEqual(link["url"], f"{self.origin}/s/{link['token']}")
        self.assertTrue(link["password"])
        expires = datetime.datetime.fromisoformat(link["expires"])
        left = expires - datetime.datetime.now(datetime.UTC)
        self.assertTrue(datetime.timedelta(days=1.9) < left <= datetime.timedelta(days=2))
        stored = yield self.appliance.store.share(link["token"])
        self.assertTrue(stored["password_hash"].startswith("$argon2id$"))

        path = f"/s/{link['token']}"
        page = yield self.request("GET", path)
        self.assertEqual(page.status, 200)
        text = page.body.decode()
        self.assertNotIn("<img", text)
        self.assertIn("&lt;img src=x onerror=alert(1)&gt; &amp; co.pdf", text)
        self.assertIn('type="password"', text)
        self.assertIn(f'action="{path}/download"', text)
        self.assertEqual(page.headers["Referrer-Policy"], "no-referrer")
        self.assertIn("default-src 'none'", page.headers["Content-Security-Policy"])

        response = yield self.request("GET", f"{path}/download")
        self.assertEqual(response.status, 403)
        response = yield self.request("GET", f"{path}/download?password=wrong")
        self.assertEqual(response.status, 403)
        self.assertIn(b"Wrong password", response.body)
        response = yield self.request("GET", f"{path}/download?password=open%20sesame")
        self.assertEqual((response.status, response.body), (200, data))
        self.assertIn("attachment", response.headers["Content-Disposition"])
        form = urllib.parse.urlencode({"password": "open sesame"}).encode()
        response = yield self.request(
            "POST",
            f"{path}/download",
            form,
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.assertEqual((response.status, response.body), (200, data))

    @inlineCallbacks
    def test_a_link_stops_after_max_downloads(self):
        data = os.urandom(10 * 1024)
        file = yield self.uploaded_file(data, "twice.bin")
        link = yield self.share(file["id"], max_downloads=2)
        path = f"/s/{link['token']}"
        page = yield self.request("GET", path)
        self.assertIn(b"2 downloads left", page.body)
        self.assertIn(f'href="{path}/download"'.encode(), page.body)
        response = yield self.request("HEAD", f"{path}/download")  # HEAD does not count
        self.assertEqual(response.status, 200)
        for _ in range(2):
            response = yield self.request("GET", f"{path}/download")
            self.assertEqual((response.status, response.body), (200, data))
        response = yield self.request("GET", f"{path}/download")
        self.assertEqual(response.status, 410)
        page = yield self.request("GET", path)
        self.assertEqual(page.status, 410)
        (listed,) = (
            yield self.request(
                "GET", f"/api/files/{file['id']}/shares", headers={"Authorization": basic(ALICE)}
            )
        ).json()["shares"]
        self.assertEqual((listed["downloads"], listed["state"]), (2, "used up"))

    @inlineCallbacks
    def test_a_revoked_or_unknown_link_is_404(self):
        file = yield self.uploaded_file(os.urandom(1000), "revoke.bin")
        link = yield self.share(file["id"])
        bob = {"Authorization": basic(BOB)}
        response = yield self.request("DELETE", f"/api/shares/{link['token']}", headers=bob)
        self.assertEqual(response.status, 404)  # only the owner revokes
        response = yield self.request("GET", f"/s/{link['token']}/download")
        self.assertEqual(response.status, 200)
        alice = {"Authorization": basic(ALICE)}
        response = yield self.request("DELETE", f"/api/shares/{link['token']}", headers=alice)
        self.assertEqual(response.status, 204)
        for path in (f"/s/{link['token']}", f"/s/{link['token']}/download", "/s/" + "A" * 32):
            response = yield self.request("GET", path)
            self.assertEqual(response.status, 404, path)
            self.assertIn(b"does not exist or was withdrawn", response.body)

    @inlineCallbacks
    def test_an_expired_link_is_410(self):
        file = yield self.uploaded_file(os.urandom(1000), "old.bin")
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
        share = yield self.appliance.store.create_share(file["id"], past)
        for path in (f"/s/{share['token']}", f"/s/{share['token']}/download"):
            response = yield self.request("GET", path)
            self.assertEqual(response.status, 410, path)
            self.assertIn(b"expired", response.body)

    @inlineCallbacks
    def test_a_link_never_outlives_its_file_and_bad_options_are_400(self):
        file = yield self.uploaded_file(os.urandom(1000), "short.bin")
        link = yield self.share(file["id"], expires_days=3650)
        self.assertEqual(datetime.datetime.fromisoformat(link["expires"]), file["expires"])
        auth = {"Authorization": basic(ALICE)}
        for body in ({"expires_days": 0}, {"max_downloads": 0}, {"password": 5}):
            response = yield self.request("POST", f"/api/files/{file['id']}/shares", body, auth)
            self.assertEqual(response.status, 400, body)


class PublicURLTests(StationAPITestCase):
    def configuration(self) -> dict:
        return {
            **super().configuration(),
            "transfer": {"public_url": "https://files.example.test/"},
        }

    @inlineCallbacks
    def test_a_link_uses_the_configured_public_url(self):
        file = yield self.uploaded_file(os.urandom(1000), "public.bin")
        response = yield self.request(
            "POST", f"/api/files/{file['id']}/shares", {}, {"Authorization": basic(ALICE)}
        )
        link = response.json()
        self.assertEqual(link["url"], f"https://files.example.test/s/{link['token']}")

    @inlineCallbacks
    def test_the_public_origin_is_a_same_origin_proof(self):
        response = yield self.request(
            "POST",
            "/api/login",
            {"address": ALICE, "password": PASSWORD},
            {"Origin": "https://files.example.test"},
        )
        self.assertEqual(response.status, 200)


class PostgreSQLShareLinkTests(ShareLinkTests):
    """The share links again with the metadata in PostgreSQL (skipped without a server)."""

    def configuration(self) -> dict:
        return {**super().configuration(), "database": postgres_url(self)}


class HTTPSSessionTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_a_login_over_tls_sets_a_secure_cookie(self):
        appliance = yield started_appliance(self, ("https",))
        yield add_account(appliance, ALICE)
        port = port_of(appliance, "https")

        def run(method, path, body=b"", headers=None):
            conn = http.client.HTTPSConnection(
                "127.0.0.1", port, timeout=20, context=insecure_tls()
            )
            try:
                conn.request(method, path, body=body, headers=headers or {})
                response = conn.getresponse()
                return response.status, response.headers, response.read()
            finally:
                conn.close()

        login = json.dumps({"address": ALICE, "password": PASSWORD}).encode()
        status, headers, _ = yield deferToThread(
            run, "POST", "/api/login", login, {"Content-Type": "application/json"}
        )
        self.assertEqual(status, 200)
        cookie = headers["Set-Cookie"]
        self.assertIn("secure", {a.strip().lower() for a in cookie.split(";")[1:]})
        status, _, body = yield deferToThread(
            run, "GET", "/api/me", b"", {"Cookie": cookie.split(";", 1)[0]}
        )
        self.assertEqual((status, json.loads(body)["address"]), (200, ALICE))
