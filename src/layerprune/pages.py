"""Load every page of the built book in headless Chromium: each must load with its images and math, and with no
failed request (the book is read offline)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .cache import atomic_file
from .errors import InvalidInputError

CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
)


@dataclass
class PageReport:
    """What one page did in the browser."""

    page: str
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    math: int = 0

    @property
    def ok(self) -> bool:
        return not self.broken_images and not self.failed_requests


def chromium_path() -> str:
    """Debian's chromium, or a clear error saying how to install it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise InvalidInputError("Chromium is not installed; on Debian/Ubuntu: apt-get install chromium")
    return found


@contextmanager
def _serve(root: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def check_pages(html_dir: str | Path, screenshots: str | Path | None = None) -> list[PageReport]:
    """Open every HTML page (search and index pages excepted) over a local server and report on it."""
    from playwright.sync_api import sync_playwright

    root = Path(html_dir)
    pages = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*.html")
        if p.name not in {"genindex.html", "search.html"} and "_static" not in p.parts
    )
    if not pages:
        raise InvalidInputError(f"no HTML pages under {root}; build the book first")
    reports = []
    with _serve(root) as base, sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium_path(), args=list(CHROMIUM_ARGS))
        try:
            for name in pages:
                reports.append(_check(browser, f"{base}/{name}", name, screenshots))
        finally:
            browser.close()
    return reports


def _check(browser, url: str, name: str, screenshots: str | Path | None) -> PageReport:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    report = PageReport(name)
    page.on("requestfailed", lambda request: report.failed_requests.append(request.url))
    page.on("response", lambda response: response.status >= 400 and report.failed_requests.append(response.url))
    page.goto(url, wait_until="networkidle")
    page.wait_for_function("() => !window.MathJax || !MathJax.startup || MathJax.startup.promise !== undefined")
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    images = page.evaluate("() => [...document.images].map(i => [i.currentSrc || i.src, i.complete && i.naturalWidth])")
    report.images = len(images)
    report.broken_images = [src for src, width in images if not width]
    report.math = page.evaluate("() => document.querySelectorAll('mjx-container').length")
    if screenshots is not None:
        target = Path(screenshots) / (name.replace("/", "_").removesuffix(".html") + ".png")
        with atomic_file(target) as tmp:
            page.screenshot(path=str(tmp), full_page=True)
    page.close()
    return report
