"""Shared by the browser tests: headless Chromium (Debian's `chromium`) driven by Playwright, a local static server,
and a page that records console errors and every request that would leave the machine (and blocks it)."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium tries to reach Google's hosts at every start.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def need_browser():
    """Skip where there is no Chromium or Playwright, except in CI (MECHLIB_REQUIRE_BROWSER=1, set by .ci/run,
    which installs Chromium): there a missing browser fails the test instead of skipping it."""
    missing = [what for what, ok in (("chromium", Path(CHROMIUM).exists()),
                                     ("playwright", _has("playwright"))) if not ok]
    if missing:
        if os.environ.get("MECHLIB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests need {missing}: `apt-get install chromium` and `make install`")
        pytest.skip(f"no {', '.join(missing)} here (`apt-get install chromium`; CI installs it)")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve(root: Path):
    """Serve a folder on 127.0.0.1 at a free port; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()


@contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watched:
    """A page with what went wrong on it: console errors, uncaught exceptions (also in its iframes), and requests
    to anywhere but `local` (aborted, so a test never reaches the network)."""
    page: object
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)


def watched_page(browser, local: str, ignore_errors: tuple[str, ...] = ()) -> Watched:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    w = Watched(page)

    def route(r):
        url = r.request.url
        if url.startswith((local, "data:", "blob:", "about:")):
            r.continue_()
        else:
            w.outside.append(url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: w.errors.append(f"{page.url}: {m.text}")
            if m.type == "error" and not any(s in m.text for s in ignore_errors) else None)
    page.on("pageerror", lambda e: w.errors.append(f"{page.url}: uncaught {e}"))
    return w


def frame_with(page, selector: str):
    """The first frame (the page or one of its iframes) that holds `selector`."""
    for frame in page.frames:
        if frame.query_selector(selector) is not None:
            return frame
    raise AssertionError(f"no frame of {page.url} has {selector!r}")
