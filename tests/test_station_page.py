"""The station's page (web/page.py, web/static/) served by the real appliance on loopback:
how its files are served, then a real browser (headless Chromium, tests/support/browser.py)
logging in, uploading with tus-js-client, pausing, resuming after a reload, sharing (with link
options, the list of links and revoking), keeping in the cloud drive and deleting."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.support.appliance import PASSWORD, add_account, port_of, started_appliance
from tests.support.browser import started_browser

ALICE = "alice@example.test"
MiB = 1024 * 1024


def fetch(url: str, headers: dict | None = None, method: str = "GET"):
    """(status, headers, body) of a plain HTTP request, on a thread."""

    def run():
        request = urllib.request.Request(url, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    return deferToThread(run)


def write_random(path: str, size: int) -> str:
    """A file of ``size`` random bytes at ``path``; returns its SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(0, size, MiB):
            block = os.urandom(min(MiB, size - f.tell()))
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


class PageServingTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.appliance = yield started_appliance(self, ("http",))
        self.base = f"http://127.0.0.1:{port_of(self.appliance, 'http')}"

    @inlineCallbacks
    def test_the_page_has_a_strict_csp_and_no_inline_script(self):
        status, headers, body = yield fetch(self.base + "/")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/html; charset=utf-8")
        self.assertIn("default-src 'self'", headers["Content-Security-Policy"])
        self.assertEqual(headers["Cache-Control"], "no-cache")
        self.assertEqual(headers["X-Content-Type-Options"], "nosniff")
        html = body.decode()
        self.assertNotIn("{{", html)
        for attributes, content in re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S):
            self.assertIn("src=", attributes)
            self.assertEqual(content.strip(), "")
        self.assertNotRegex(html, r"\son[a-z]+=")  # no inline event handlers
        self.assertNotIn("style=", html)

    @inlineCallbacks
    def test_versioned_assets_are_cached_for_a_year_with_their_content_type(self):
        _, _, body = yield fetch(self.base + "/")
        urls = re.findall(r'(?:src|href)="(/static/[^"]+)"', body.decode())
        types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
        self.assertEqual(
            sorted(u.split("?")[0] for u in urls),
            ["/static/app.css", "/static/app.js", "/static/vendor/tus.min.js"],
        )
        for url in urls:
            status, headers, content = yield fetch(self.base + url)
            self.assertEqual(status, 200, url)
            path, version = url.split("?v=")
            self.assertEqual(headers["Content-Type"], types[os.path.splitext(path)[1]])
            self.assertEqual(headers["Cache-Control"], "public, max-age=31536000, immutable")
            self.assertTrue(hashlib.sha256(content).hexdigest().startswith(version))
            self.assertIn("default-src 'self'", headers["Content-Security-Policy"])
            status, _, _ = yield fetch(self.base + url, {"If-None-Match": headers["ETag"]})
            self.assertEqual(status, 304)
            status, headers, _ = yield fetch(self.base + path)
            self.assertEqual((status, headers["Cache-Control"]), (200, "no-cache"))

    @inlineCallbacks
    def test_unknown_static_paths_and_directories_are_404(self):
        for path in ("/static/", "/static/vendor/", "/static/nope.js", "/static/../page.py"):
            status, _, _ = yield fetch(self.base + path)
            self.assertEqual(status, 404, path)

    @inlineCallbacks
    def test_the_vendored_tus_client_comes_with_its_licence(self):
        status, headers, body = yield fetch(self.base + "/static/vendor/tus.LICENSE.txt")
        self.assertEqual((status, headers["Content-Type"]), (200, "text/plain; charset=utf-8"))
        self.assertIn(b"MIT License", body)


# -- the page in a browser (run on the browser thread: Playwright's sync API) -------------


def log_in(page, url: str, address: str, password: str, succeeds: bool = True) -> None:
    page.goto(url)
    page.get_by_label("Mail address").fill(address)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    if succeeds:
        page.locator("#station-view").wait_for()


def upload(page, path: str) -> None:
    page.get_by_label("Files to upload").set_input_files(path)


def wait_listed(page, name: str) -> dict:
    item = page.locator(f'#files li[data-name="{name}"]')
    item.wait_for()
    return {
        "size": item.locator(".size").text_content(),
        "expiry": item.locator(".expiry").text_content(),
        "href": item.locator("a.name").evaluate("a => a.href"),
    }


def upload_state(page, name: str) -> tuple[str, int]:
    item = page.locator(f'#uploads li[data-name="{name}"]')
    state, offset = item.evaluate("li => [li.dataset.state, li.dataset.offset || '0']")
    return state, int(offset)


def wait_offset_beyond(page, name: str, offset: int) -> None:
    page.wait_for_function(
        "([name, offset]) => { const li = [...document.querySelectorAll('#uploads li')]"
        ".find(e => e.dataset.name === name);"
        " return li && Number(li.dataset.offset || 0) > offset; }",
        arg=[name, offset],
    )


def wait_state(page, name: str, state: str) -> None:
    page.locator(f'#uploads li[data-name="{name}"][data-state="{state}"]').wait_for()


def share(page, name: str) -> tuple[dict, str, str]:
    """Click "Copy link"; the API's answer, the link the page shows, and its message."""
    with page.expect_response(lambda r: r.url.endswith("/shares")) as answer:
        page.get_by_role("button", name=f"Copy a share link for {name}").click()
    field = page.get_by_role("textbox", name=f"Share link for {name}")
    page.wait_for_function("f => f.value !== ''", arg=field.element_handle())
    status = page.locator(f'#files li[data-name="{name}"] .share-status')
    return answer.value.json(), field.input_value(), status.text_content()


def file_item(page, name: str):
    return page.locator(f'#files li[data-name="{name}"]')


def open_links(page, name: str) -> str:
    """Open the share box of ``name`` with its "Links" button and wait for its links to be
    loaded; the button's aria-expanded."""
    button = page.get_by_role("button", name=f"Links to {name}")
    button.click()  # the click handler marks the list busy until the API answers
    file_item(page, name).locator(".links:not([aria-busy])").wait_for(state="attached")
    return button.get_attribute("aria-expanded")


def close_links(page, name: str) -> None:
    page.get_by_role("button", name=f"Links to {name}").click()
    file_item(page, name).locator(".share-box").wait_for(state="hidden")


def link_form(page, name: str) -> dict:
    """The labelled fields of the link options of ``name`` (its share box and the options
    opened first)."""
    item = file_item(page, name)
    if item.locator(".share-box").is_hidden():
        open_links(page, name)
    if not item.locator("details.share-options").evaluate("d => d.open"):
        page.get_by_label(f"Link options for {name}").click()
    return {
        "days": page.get_by_label(f"Link to {name} expires after (days)"),
        "password": page.get_by_label(f"Password for the link to {name} (optional)"),
        "limit": page.get_by_label(f"Download limit for the link to {name} (optional)"),
    }


def create_link(page, name: str, **values) -> tuple[int, dict]:
    """Fill the link options of ``name`` (``days``, ``password``, ``limit``: text to type) and
    press "Create link"; the API's status and JSON answer."""
    fields = link_form(page, name)
    for key, value in values.items():
        fields[key].fill(value)
    with page.expect_response(
        lambda r: r.url.endswith("/shares") and r.request.method == "POST"
    ) as answer:
        page.get_by_role("button", name=f"Create link for {name}").click()
    return answer.value.status, answer.value.json()


def link_row(page, name: str, token: str, state: str) -> dict:
    """The row of the link ``token`` in the list of ``name`` once it shows ``state``."""
    row = file_item(page, name).locator(f'.links li[data-token="{token}"][data-state="{state}"]')
    row.wait_for()
    return {
        "name": row.locator(".link-name").text_content(),
        "state": row.locator(".link-state").text_content(),
        "detail": row.locator(".link-detail").text_content(),
        "revoke": row.locator(".revoke").is_visible(),
    }


def wait_notice(page, start: str) -> tuple[str, bool]:
    """The notice once it starts with ``start``, and whether it shows as an error."""
    page.wait_for_function(
        "start => document.getElementById('notice').textContent.startsWith(start)", arg=start
    )
    notice = page.locator("#notice")
    return notice.text_content(), "is-error" in (notice.get_attribute("class") or "")


def move(page, name: str, button: str, kind: str) -> dict:
    """Click the file's move button (its accessible name is ``button``); the file once it
    shows as ``kind``: its expiry text, its button and the notice."""
    page.get_by_role("button", name=button).click()
    item = page.locator(f'#files li[data-name="{name}"][data-kind="{kind}"]')
    item.wait_for()
    return {
        "expiry": item.locator(".expiry").text_content(),
        "button": item.locator(".move").text_content(),
        "notice": page.locator("#notice").text_content(),
    }


def wait_usage(page, start: str) -> str:
    """The usage line once it starts with ``start`` (it is refreshed after each change)."""
    page.wait_for_function(
        "start => document.getElementById('usage').textContent.startsWith(start)", arg=start
    )
    return page.locator("#usage").text_content()


class StationPageTests(TestCase):
    timeout = 240
    #: A small cloud drive, so that the page meets its limit.
    CLOUD = 3 * MiB

    @inlineCallbacks
    def setUp(self):
        self.browser = yield started_browser(self, reactor)  # skips first when there is none
        self.appliance = yield started_appliance(
            self, ("http",), transfer={"cloud_capacity": self.CLOUD}
        )
        self.alice = yield add_account(self.appliance, ALICE)
        self.base = f"http://127.0.0.1:{port_of(self.appliance, 'http')}/"
        self.directory = self.mktemp()
        os.makedirs(self.directory)

    def run_page(self, fn, *args, **kwargs):
        return self.browser.run(fn, *args, **kwargs)

    def tearDown(self):
        # No script error and nothing refused by the Content-Security-Policy, in any test.
        self.assertEqual(self.browser.errors, [])

    @inlineCallbacks
    def test_a_wrong_password_is_refused_on_the_page(self):
        yield self.run_page(log_in, self.base, ALICE, "not the password", succeeds=False)
        error = yield self.run_page(
            lambda page: (
                page.wait_for_function(
                    "() => document.getElementById('login-error').textContent !== ''"
                ),
                page.locator("#login-error").text_content(),
            )[1]
        )
        self.assertEqual(error, "Wrong address or password.")
        hidden = yield self.run_page(lambda page: page.locator("#station-view").is_hidden())
        self.assertTrue(hidden)

    @inlineCallbacks
    def test_an_upload_arrives_byte_exact_is_listed_shared_and_deleted(self):
        path = os.path.join(self.directory, "report.bin")
        digest = write_random(path, 5 * MiB)
        yield self.run_page(log_in, self.base, ALICE, PASSWORD)
        who = yield self.run_page(lambda page: page.locator("#who").text_content())
        self.assertEqual(who, ALICE)

        yield self.run_page(upload, path)
        yield self.run_page(wait_state, "report.bin", "done")
        listed = yield self.run_page(wait_listed, "report.bin")
        self.assertEqual(listed["size"], "5.0 MiB")
        self.assertTrue(listed["expiry"].startswith("Expires "), listed["expiry"])

        (stored,) = yield self.appliance.store.list_files(self.alice)
        self.assertEqual((stored["name"], stored["size"]), ("report.bin", 5 * MiB))
        self.assertEqual(stored["blob_sha256"], digest)
        # The page's download link, with the page's own session cookie.
        body = yield self.run_page(lambda page: page.request.get(listed["href"]).body())
        self.assertEqual(hashlib.sha256(body).hexdigest(), digest)

        yield self.run_page(lambda page: page.reload())
        again = yield self.run_page(wait_listed, "report.bin")
        self.assertEqual(again, listed)

        answer, link, message = yield self.run_page(share, "report.bin")
        self.assertEqual(link, urllib.parse.urljoin(self.base, answer["url"]))
        self.assertIn(answer["token"], link)
        self.assertTrue(
            message.startswith(("Link copied.", "Copy the link from the field.")), message
        )

        def delete(page):
            page.once("dialog", lambda dialog: dialog.accept())
            page.get_by_role("button", name="Delete report.bin").click()
            page.locator('#files li[data-name="report.bin"]').wait_for(state="detached")
            return page.locator("#notice").text_content()

        notice = yield self.run_page(delete)
        self.assertEqual(notice, "report.bin deleted.")
        self.assertEqual((yield self.appliance.store.list_files(self.alice)), [])
        gone = yield self.run_page(
            lambda page: (page.reload(), page.locator("#files-empty").wait_for())[1]
        )
        self.assertIsNone(gone)

    @inlineCallbacks
    def test_an_upload_pauses_resumes_and_continues_after_a_reload(self):
        size, chunk, name = 50 * MiB, 512 * 1024, "big.bin"
        path = os.path.join(self.directory, name)
        digest = write_random(path, size)
        yield self.run_page(log_in, self.base + f"?chunk={chunk}", ALICE, PASSWORD)
        # Slow the link down (Chrome DevTools Protocol) so the upload takes some seconds.
        yield self.run_page(
            lambda page: page.context.new_cdp_session(page).send(
                "Network.emulateNetworkConditions",
                {
                    "offline": False,
                    "latency": 0,
                    "downloadThroughput": -1,
                    "uploadThroughput": 10 * MiB,
                },
            )
        )
        started = time.monotonic()
        yield self.run_page(upload, path)

        yield self.run_page(wait_offset_beyond, name, 5 * MiB)
        yield self.run_page(lambda page: page.get_by_role("button", name=f"Pause {name}").click())
        yield self.run_page(wait_state, name, "paused")
        _, paused_at = yield self.run_page(upload_state, name)
        self.assertLess(paused_at, size)
        yield deferToThread(time.sleep, 1.0)
        state, still = yield self.run_page(upload_state, name)
        self.assertEqual((state, still), ("paused", paused_at))

        yield self.run_page(lambda page: page.get_by_role("button", name=f"Resume {name}").click())
        yield self.run_page(wait_offset_beyond, name, paused_at + chunk)
        yield self.run_page(lambda page: page.get_by_role("button", name=f"Pause {name}").click())
        yield self.run_page(wait_state, name, "paused")
        _, paused_at = yield self.run_page(upload_state, name)
        self.assertLess(paused_at, size)

        # A reload forgets the page's state; tus-js-client's fingerprint in localStorage does
        # not: the page lists the unfinished upload, and choosing the file again continues it.
        yield self.run_page(lambda page: page.reload())
        unfinished = yield self.run_page(
            lambda page: page.locator(
                f'#unfinished-list li[data-name="{name}"] .detail'
            ).text_content()
        )
        self.assertIn("% of 50 MiB", unfinished)
        yield self.run_page(upload, path)
        yield self.run_page(
            lambda page: page.locator(
                f'#uploads li[data-name="{name}"][data-resumed="true"]'
            ).wait_for()
        )
        yield self.run_page(wait_state, name, "done")
        seconds = time.monotonic() - started

        (stored,) = yield self.appliance.store.list_files(self.alice)
        self.assertEqual((stored["size"], stored["blob_sha256"]), (size, digest))
        basic = base64.b64encode(f"{ALICE}:{PASSWORD}".encode()).decode()
        listed = yield self.run_page(wait_listed, name)
        status, _, body = yield fetch(listed["href"], {"Authorization": "Basic " + basic})
        self.assertEqual((status, hashlib.sha256(body).hexdigest()), (200, digest))
        unfinished_left = yield self.run_page(
            lambda page: page.evaluate(
                "() => Object.keys(localStorage).filter(k => k.startsWith('tus::')).length"
            )
        )
        self.assertEqual(unfinished_left, 0)  # removeFingerprintOnSuccess
        self.assertLess(seconds, 120, json.dumps({"upload_seconds": seconds}))

    @inlineCallbacks
    def test_a_file_is_kept_in_the_cloud_drive_within_its_capacity_and_moved_back(self):
        for name in ("kept.bin", "big.bin"):
            write_random(os.path.join(self.directory, name), 2 * MiB)
        yield self.run_page(log_in, self.base, ALICE, PASSWORD)
        for name in ("kept.bin", "big.bin"):
            yield self.run_page(upload, os.path.join(self.directory, name))
            yield self.run_page(wait_listed, name)
        usage = yield self.run_page(wait_usage, "Station: 4.0 MiB")
        self.assertEqual(
            usage, "Station: 4.0 MiB of 32 GiB used · Cloud drive: 0 B of 3.0 MiB used"
        )

        kept = yield self.run_page(move, "kept.bin", "Keep kept.bin in the cloud drive", "cloud")
        self.assertEqual(
            kept,
            {
                "expiry": "Kept in cloud drive",
                "button": "Move to station",
                "notice": "kept.bin is kept in the cloud drive.",
            },
        )
        files = {f["name"]: f for f in (yield self.appliance.store.list_files(self.alice))}
        self.assertEqual((files["kept.bin"]["kind"], files["kept.bin"]["expires"]), ("cloud", None))
        usage = yield self.run_page(wait_usage, "Station: 2.0 MiB")
        self.assertEqual(
            usage, "Station: 2.0 MiB of 32 GiB used · Cloud drive: 2.0 MiB of 3.0 MiB used"
        )

        def refused(page):
            page.get_by_role("button", name="Keep big.bin in the cloud drive").click()
            page.locator("#notice.is-error").wait_for()
            item = page.locator('#files li[data-name="big.bin"]')
            return (
                page.locator("#notice").text_content(),
                item.get_attribute("data-kind"),
                item.locator(".move").is_enabled(),
            )

        notice, kind, enabled = yield self.run_page(refused)
        self.assertEqual(
            notice,
            "Could not move big.bin to the cloud drive: over the cloud drive capacity of"
            f" {self.CLOUD} bytes for this account ({2 * MiB} bytes in use, {2 * MiB} more"
            " asked for)",
        )
        self.assertEqual((kind, enabled), ("station", True))
        self.assertEqual(
            (yield self.appliance.store.file(files["big.bin"]["id"])), files["big.bin"]
        )

        yield self.run_page(lambda page: page.reload())
        again = yield self.run_page(wait_listed, "kept.bin")
        self.assertEqual(again["expiry"], "Kept in cloud drive")

        back = yield self.run_page(move, "kept.bin", "Move kept.bin to the station", "station")
        self.assertTrue(back["expiry"].startswith("Expires "), back)
        self.assertEqual(back["button"], "Keep")
        self.assertTrue(back["notice"].startswith("kept.bin is back on the station until "), back)
        stored = yield self.appliance.store.file(files["kept.bin"]["id"])
        self.assertEqual(stored["kind"], "station")
        self.assertIsNotNone(stored["expires"])
        usage = yield self.run_page(wait_usage, "Station: 4.0 MiB")
        self.assertTrue(usage.endswith("Cloud drive: 0 B of 3.0 MiB used"), usage)

    @inlineCallbacks
    def upload_small(self, name: str) -> dict:
        """Log in, upload a small file from the page; the stored file, with its content's
        SHA-256."""
        path = os.path.join(self.directory, name)
        digest = write_random(path, 256 * 1024)
        yield self.run_page(log_in, self.base, ALICE, PASSWORD)
        yield self.run_page(upload, path)
        yield self.run_page(wait_listed, name)
        (stored,) = yield self.appliance.store.list_files(self.alice)
        self.assertEqual(stored["blob_sha256"], digest)
        return stored

    def api_shares(self, file_id: str):
        """The file's links as ``GET /api/files/ID/shares`` gives them (HTTP Basic)."""
        basic = base64.b64encode(f"{ALICE}:{PASSWORD}".encode()).decode()
        d = fetch(f"{self.base}api/files/{file_id}/shares", {"Authorization": "Basic " + basic})
        return d.addCallback(lambda answer: (answer[0], json.loads(answer[2])))

    @inlineCallbacks
    def test_a_link_with_options_is_listed_and_revoked_from_the_page(self):
        name, secret = "notes.bin", "open sesame 7"
        stored = yield self.upload_small(name)
        expanded = yield self.run_page(open_links, name)
        self.assertEqual(expanded, "true")
        empty = yield self.run_page(
            lambda page: file_item(page, name).locator(".links-empty").text_content()
        )
        self.assertEqual(empty, "No links yet.")
        default = yield self.run_page(lambda page: link_form(page, name)["days"].input_value())
        self.assertEqual(default, "30")  # /api/me's share_expires_days

        status, answer = yield self.run_page(
            create_link, name, days="2", password=secret, limit="3"
        )
        self.assertEqual(status, 201, answer)
        token = answer["token"]
        self.assertEqual(
            (answer["password"], answer["max_downloads"], answer["downloads"], answer["state"]),
            (True, 3, 0, "active"),
        )
        # Shown and copied like a quick link; the form is back to the defaults (the password
        # is not kept around).
        link, message, form = yield self.run_page(
            lambda page: (
                page.get_by_role("textbox", name=f"Share link for {name}").input_value(),
                file_item(page, name).locator(".share-status").text_content(),
                {k: f.input_value() for k, f in link_form(page, name).items()},
            )
        )
        self.assertEqual(link, urllib.parse.urljoin(self.base, answer["url"]))
        self.assertTrue(
            message.startswith(("Link copied.", "Copy the link from the field.")), message
        )
        self.assertIn("It asks for its password. It allows 3 downloads.", message)
        self.assertEqual(form, {"days": "30", "password": "", "limit": ""})

        # The store: hashed password, the limit, two days (well within the file's 30).
        (row,) = yield self.appliance.store.shares(stored["id"])
        self.assertEqual((row["token"], row["max_downloads"], row["downloads"]), (token, 3, 0))
        self.assertFalse(row["revoked"])
        self.assertIsNotNone(row["password_hash"])
        self.assertNotIn(secret, row["password_hash"])
        ok, _ = yield self.appliance.passwords.verify(row["password_hash"], secret)
        self.assertTrue(ok)
        lifetime = row["expires"] - row["created"]
        self.assertLess(abs(lifetime - datetime.timedelta(days=2)), datetime.timedelta(minutes=1))
        status, listed = yield self.api_shares(stored["id"])
        self.assertEqual(status, 200)
        (api_link,) = listed["shares"]
        self.assertEqual(
            {k: api_link[k] for k in ("token", "password", "max_downloads", "state")},
            {"token": token, "password": True, "max_downloads": 3, "state": "active"},
        )

        shown = yield self.run_page(link_row, name, token, "active")
        self.assertTrue(shown["name"].startswith("Link 1 · made "), shown)
        self.assertEqual(shown["state"], "Active")
        self.assertTrue(shown["detail"].startswith("Expires "), shown)
        self.assertTrue(shown["detail"].endswith(" · 0 of 3 downloads · Password-protected"))
        self.assertTrue(shown["revoke"])

        # A download through the link counts; the list is loaded again when the box opens.
        download = f"{self.base}s/{token}/download?password={urllib.parse.quote(secret)}"
        status, _, body = yield fetch(download)
        self.assertEqual((status, hashlib.sha256(body).hexdigest()), (200, stored["blob_sha256"]))
        yield self.run_page(close_links, name)
        yield self.run_page(open_links, name)
        shown = yield self.run_page(link_row, name, token, "active")
        self.assertTrue(shown["detail"].endswith(" · 1 of 3 downloads · Password-protected"))

        def revoke(page):
            page.get_by_role("button", name=f"Revoke link 1 to {name}").click()
            row = link_row(page, name, token, "revoked")
            focused = page.evaluate("() => document.activeElement.dataset.token")
            field = file_item(page, name).locator(".share-result")
            return row, focused, wait_notice(page, "Link 1"), field.is_hidden()

        shown, focused, notice, field_hidden = yield self.run_page(revoke)
        self.assertEqual(shown["state"], "Revoked")
        self.assertFalse(shown["revoke"])  # no button on a link that is no longer active
        self.assertEqual(focused, token)  # focus stays where the pressed button was
        self.assertEqual(notice, (f"Link 1 to {name} revoked: it no longer works.", False))
        self.assertTrue(field_hidden)  # the revoked link is no longer offered for copying

        (row,) = yield self.appliance.store.shares(stored["id"])
        self.assertTrue(row["revoked"])
        _, listed = yield self.api_shares(stored["id"])
        self.assertEqual([s["state"] for s in listed["shares"]], ["revoked"])
        for url in (download, f"{self.base}s/{token}/download", f"{self.base}s/{token}"):
            status, _, _ = yield fetch(url)
            self.assertEqual(status, 404, url)

    @inlineCallbacks
    def test_link_options_the_api_refuses_are_explained_and_copy_link_keeps_the_defaults(self):
        name = "draft.bin"
        stored = yield self.upload_small(name)

        status, answer = yield self.run_page(create_link, name, days="0")
        self.assertEqual(status, 400, answer)
        notice = yield self.run_page(wait_notice, "Could not make a link")
        self.assertEqual(
            notice,
            (
                f"Could not make a link for {name}: expires_days must be a number above 0, at most"
                " 3650",
                True,
            ),
        )
        status, answer = yield self.run_page(create_link, name, days="1", limit="0")
        self.assertEqual(status, 400, answer)
        notice = yield self.run_page(wait_notice, "Could not make a link")
        self.assertEqual(
            notice,
            (
                f"Could not make a link for {name}: max_downloads must be a whole number of at"
                " least 1",
                True,
            ),
        )
        self.assertEqual((yield self.appliance.store.shares(stored["id"])), [])

        # The quick "Copy link" still makes a link with the defaults, listed in the open box.
        answer, link, message = yield self.run_page(share, name)
        self.assertEqual(link, urllib.parse.urljoin(self.base, answer["url"]))
        self.assertEqual((answer["password"], answer["max_downloads"]), (False, None))
        shown = yield self.run_page(link_row, name, answer["token"], "active")
        self.assertTrue(shown["detail"].endswith(" · 0 downloads, no limit · No password"), shown)
        notice = yield self.run_page(lambda page: page.locator("#notice").text_content())
        self.assertEqual(notice, "")  # the refusal no longer shows
        (row,) = yield self.appliance.store.shares(stored["id"])
        self.assertIsNone(row["password_hash"])
        lifetime = row["expires"] - row["created"]
        self.assertLess(abs(lifetime - datetime.timedelta(days=30)), datetime.timedelta(minutes=1))
