"""analytics.js (@segment/analytics-next, the npm package's UMD build) in headless Chromium, against OpenCDP.

The page comes from a second loopback HTTP server (another port, so every call to OpenCDP is cross-origin
and goes through CORS, preflights included). analytics.js is pointed at OpenCDP by ``cdnURL`` only: it must
fetch its settings from OpenCDP and then deliver there, without ever touching Segment's CDN or API.
Non-loopback hosts are unreachable from this browser (a dead proxy), and every request it attempts is
recorded, so "no request left loopback" is checked, not assumed. Playwright's request interception
(``page.route``) is deliberately not used: it answers CORS preflights itself, which would hide a server
that gets them wrong.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, sync_playwright

from opencdp.model.sources import Source
from tests.helpers import ServerProcess, free_port
from tests.sdk.common import (
    JS_DIR,
    NODE_MODULES,
    assert_stored_as_sent,
    assert_stored_exactly_once,
    calls,
    require_node_modules,
    wait_for_events,
)

CHROMIUM = "/usr/bin/chromium"
UMD_BUNDLE = NODE_MODULES / "@segment/analytics-next/dist/umd/index.js"
LOOPBACK = frozenset({"127.0.0.1", "localhost"})


class PageServer:
    """Serves the test page and the analytics.js bundle on a free loopback port; records every path asked for."""

    def __init__(self) -> None:
        files = {"/": (JS_DIR / "page.html", "text/html"), "/analytics-next.js": (UMD_BUNDLE, "text/javascript")}
        served: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.append(self.path)
                if self.path not in files:
                    self.send_error(404)
                    return
                path, content_type = files[self.path]
                body = Path(path).read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.served = served
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> PageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Traffic:
    """Every request the browser attempted, and how each ended."""

    requests: list[Request] = field(default_factory=list)
    failed: list[tuple[str, str | None]] = field(default_factory=list)
    finished: list[Request] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("request", lambda r: self.requests.append(r))
        page.on("requestfinished", lambda r: self.finished.append(r))
        page.on("requestfailed", lambda r: self.failed.append((r.url, r.failure)))

    def to(self, base: str) -> list[Request]:
        return [r for r in self.requests if r.url.startswith(base + "/")]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: apt-get install -y chromium (scripts/test does)", False)
    require_node_modules()
    dead_proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens: every non-loopback request fails
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--proxy-server={dead_proxy}",  # loopback bypasses a proxy implicitly; nothing else does
            ],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context (no cookies or localStorage from another test)."""
    context = browser.new_context()
    yield context.new_page()
    context.close()


@dataclass
class Run:
    source: Source
    site: str
    reported: list[dict[str, Any]]
    traffic: Traffic
    page: Page


def run_analytics_js(page: Page, server: ServerProcess, options: dict[str, Any], made: list[dict[str, Any]]) -> Run:
    source = server.admin.create_source("website", "web")
    key = source.write_key
    traffic = Traffic()
    traffic.watch(page)
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    with PageServer() as site:
        page.goto(site.url + "/")
        assert site.served == ["/", "/analytics-next.js"]
        config = {"writeKey": key, "cdnURL": server.url, "options": options}
        reported: list[dict[str, Any]] = page.evaluate("([config, calls]) => runCalls(config, calls)", [config, made])
    assert [r["failed"] for r in reported] == [None] * len(made), console
    assert not [m for m in console if m.startswith("error")], console
    settings = traffic.to(server.url)[0]  # before anything else, analytics.js asks OpenCDP for its settings
    assert settings.method == "GET"
    assert settings.url == f"{server.url}/v1/projects/{key}/settings"
    response = settings.response()
    assert response is not None
    assert response.status == 200
    return Run(source, site.url, reported, traffic, page)


def check_delivery(server: ServerProcess, run: Run, made: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Everything analytics.js reported is stored once, as it went on the wire; returns the POST bodies."""
    reported = run.reported
    assert [r["type"] for r in reported] == [c["type"] for c in made]
    message_ids = [r["messageId"] for r in reported]
    rows = wait_for_events(server.admin, run.source.source_id, len(made))
    stored = assert_stored_exactly_once(rows, message_ids)

    # The store has them all, so the browser has made every request; Playwright reports requests to this
    # thread only while it waits on the page, so wait there until the reports have caught up.
    deadline = time.monotonic() + 10
    while True:
        posts = [r for r in run.traffic.to(server.url) if r.method == "POST"]
        bodies = [json.loads(r.post_data or "") for r in posts]
        wire: dict[str, tuple[dict[str, Any], str | None]] = {}
        for body in bodies:
            for item in body.get("batch", [body]):
                wire[item["messageId"]] = (item, body.get("sentAt"))
        done = set(message_ids) <= set(wire) and all(r in run.traffic.finished for r in posts)
        if done or time.monotonic() > deadline:
            break
        run.page.wait_for_timeout(20)
    assert sorted(wire) == sorted(message_ids)
    for r in posts:
        response = r.response()
        assert response is not None
        assert response.status == 200, (r.url, response.text())
        # Cross-origin with an Authorization header: only a correct answer to the preflight lets it through.
        assert r.headers["authorization"] == "Basic " + base64.b64encode(f"{run.source.write_key}:".encode()).decode()
        assert response.headers["access-control-allow-origin"] == run.site

    for r, call in zip(reported, made, strict=True):
        message = stored[r["messageId"]]["message"]
        item, sent_at = wire[r["messageId"]]
        assert_stored_as_sent(stored[r["messageId"]], item, envelope_sent_at=sent_at, ip="127.0.0.1")
        assert message["context"]["library"]["name"] == "analytics.js"
        for key in ("event", "traits", "groupId", "previousId", "name"):
            if key in call:
                assert message[key] == call[key], (r["messageId"], key)
        if call["type"] in ("track", "screen"):
            assert message["properties"] == call["properties"]
        elif call["type"] == "page":  # analytics.js adds the page's url, path, title, referrer and search
            assert message["properties"] == {**message["properties"], **call["properties"]}
            assert message["properties"]["title"] == "OpenCDP analytics.js test page"
        if call["type"] == "identify":  # (alias is sent with the identified user's id, not its ``to``)
            assert message["userId"] == call["userId"]
    assert server.admin.rejected() == []
    return bodies


def assert_only_loopback(run: Run) -> None:
    """No request left loopback and none failed; then a control request proves a leak would have been seen."""
    traffic, page = run.traffic, run.page
    assert traffic.requests
    elsewhere = [r.url for r in traffic.requests if urlsplit(r.url).hostname not in LOOPBACK]
    assert elsewhere == []
    assert traffic.failed == []
    control = "https://cdn.segment.com/v1/projects/x/settings"
    assert page.evaluate(f"fetch('{control}').then(() => 'ok', () => 'failed')") == "failed"
    deadline = time.monotonic() + 5
    while not traffic.failed and time.monotonic() < deadline:
        page.wait_for_timeout(20)
    assert [r.url for r in traffic.requests][-1] == control
    assert [url for url, _ in traffic.failed] == [control]


@pytest.mark.slow
def test_analytics_js_default_delivery_one_request_per_event(page: Page, server_process: ServerProcess) -> None:
    server_process.start()
    made = calls(36)
    run = run_analytics_js(page, server_process, {}, made)
    bodies = check_delivery(server_process, run, made)
    # Only cdnURL was given: the settings document told analytics.js where to send, one event per request.
    paths = [urlsplit(r.url).path for r in run.traffic.to(server_process.url) if r.method == "POST"]
    assert sorted(paths) == sorted(f"/v1/{c['type'][0]}" for c in made)
    assert all(b["writeKey"] == run.source.write_key and "batch" not in b for b in bodies)
    assert_only_loopback(run)


@pytest.mark.slow
def test_analytics_js_batching_delivery(page: Page, server_process: ServerProcess) -> None:
    server_process.start()
    made = calls(60)
    host = urlsplit(server_process.url).netloc
    options = {
        "integrations": {
            "Segment.io": {
                "apiHost": f"{host}/v1",
                "protocol": "http",
                "deliveryStrategy": {"strategy": "batching", "config": {"size": 10, "timeout": 200}},
            }
        }
    }
    run = run_analytics_js(page, server_process, options, made)
    bodies = check_delivery(server_process, run, made)
    paths = {urlsplit(r.url).path for r in run.traffic.to(server_process.url) if r.method == "POST"}
    assert paths == {"/v1/b"}
    # A batch goes when 10 are buffered; what arrives during its flight goes in the next (so: few, big ones).
    assert len(bodies) >= 2
    assert sum(len(b["batch"]) for b in bodies) == len(made)
    assert all(b["writeKey"] == run.source.write_key and "sentAt" not in b["batch"][0] for b in bodies)
    assert_only_loopback(run)
