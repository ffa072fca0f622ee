"""Open every page of the built book in headless Chromium, as readers do: at a desktop width (1280 px) and at a
phone's (390 px). A page passes when it loads offline (every image and request served) and reads well:

* nothing runs sideways: the page never scrolls horizontally; at the desktop width every code line fits its
  box (on a phone a code cell may scroll inside it); other text blocks (`pre`) wrap; no figure, table, output or
  display formula runs past the text column, except inside a box that scrolls (a wide table scrolls inside its
  output);
* its HTML holds no absolute path of the machine that built it (the book's root, the home directory);
* no table shows a number with more than four decimals;
* no math is left unrendered: no `$...$` or TeX command in the text outside code (a computed sentence whose
  Markdown was rendered without the math extension shows its dollars);
* at the desktop width, every figure's legends and tick labels are shown at `plots.MIN_FONT_PT` or more. A
  figure's PNG records its DPI and its smallest such font in points (`plots.FONT_KEY`, written once
  `plots.style()` has run); the page shows the PNG scaled by (shown width / natural width), so that font is
  shown at pt * DPI / 72 * shown / natural CSS pixels, that is, at 72 / 96 of that in points (CSS has 96 px to
  the inch). A figure without the record is reported too.

Folded content (hidden cell inputs, dropdowns) is opened before the checks, so that it is checked too; the
screenshots show each page as it loads."""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image

from ..cache import atomic_file
from ..errors import InvalidInputError
from .plots import FONT_KEY, MIN_FONT_PT

CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
)
DESKTOP, PHONE = 1280, 390
MAX_DECIMALS = 4
LONG_DECIMAL = re.compile(rf"\d\.\d{{{MAX_DECIMALS + 1},}}")
UNFOLD = """() => {
    document.querySelectorAll("details").forEach(d => { d.open = true; });
    document.querySelectorAll(".toggle-hidden").forEach(e => e.classList.remove("toggle-hidden"));
}"""
OVERFLOW = """(codeScrolls) => {
    const found = [];
    const root = document.documentElement;
    if (root.scrollWidth > root.clientWidth + 1) {
        found.push(`the page scrolls sideways (${root.scrollWidth} px of content in ${root.clientWidth} px)`);
    }
    const article = document.querySelector("article") || document.body;
    const edge = article.getBoundingClientRect().right + 1;
    const scrolls = e => ["auto", "scroll"].includes(getComputedStyle(e).overflowX);
    const name = e => `${e.tagName.toLowerCase()} "${(e.innerText || e.getAttribute("src") || "").trim()
        .split("\\n")[0].slice(0, 60)}"`;
    const inScrollBox = e => {
        for (let box = e.parentElement; box && box !== article; box = box.parentElement) {
            if (scrolls(box) && box.getBoundingClientRect().right <= edge) return true;
        }
        return false;
    };
    for (const e of article.querySelectorAll("pre, table, img, mjx-container[display='true'], .cell_output > *")) {
        if (!e.getClientRects().length) continue;
        const wider = e.scrollWidth - e.clientWidth;
        const code = e.tagName === "PRE" && e.closest(".cell_input");
        const allowed = scrolls(e) && (e.tagName !== "PRE" || (code && codeScrolls));
        if (wider > 1 && !allowed) {
            found.push(`${name(e)} is ${wider} px wider than its box`);
        }
        const past = e.getBoundingClientRect().right - edge;
        if (past > 0 && !inScrollBox(e)) {
            found.push(`${name(e)} runs ${Math.round(past)} px past the text column`);
        }
    }
    return found;
}"""
UNRENDERED_MATH = """() => {
    const walker = document.createTreeWalker(document.querySelector("article") || document.body, NodeFilter.SHOW_TEXT);
    const found = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        if (node.parentElement.closest("pre, code, script, style, mjx-container")) continue;
        const match = node.textContent.match(/\\$[^$\\n]{1,80}\\$|\\\\(ell|frac|mathrm|log|left|right)\\b/);
        if (match) found.push(match[0]);
    }
    return found;
}"""
TABLE_CELLS = "() => [...document.querySelectorAll('article td, article th')].map(c => c.innerText)"
FIGURES = """() => [...document.querySelectorAll("article .cell_output img")]
    .filter(i => i.getClientRects().length)
    .map(i => [i.currentSrc || i.src, i.getBoundingClientRect().width, i.naturalWidth])"""


@dataclass
class PageReport:
    """What one page did in the browser, and what reads badly on it."""

    page: str
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    math: int = 0
    overflow: list[str] = field(default_factory=list)
    machine_paths: list[str] = field(default_factory=list)
    long_decimals: list[str] = field(default_factory=list)
    small_fonts: list[str] = field(default_factory=list)
    unrendered_math: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Every failed check, one line each."""
        return (
            [f"broken image {src}" for src in self.broken_images]
            + [f"failed request {url}" for url in self.failed_requests]
            + [f"overflow: {line}" for line in self.overflow]
            + [f"absolute path of the build machine: {line}" for line in self.machine_paths]
            + [f"more than {MAX_DECIMALS} decimals in a table: {text!r}" for text in self.long_decimals]
            + [f"small figure font: {line}" for line in self.small_fonts]
            + [f"unrendered math: {text!r}" for text in self.unrendered_math]
        )

    @property
    def ok(self) -> bool:
        return not self.problems


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


def machine_paths(html_dir: Path) -> list[str]:
    """The absolute paths no page may show: the book's root (above _build/html) and the home directory."""
    candidates = {*html_dir.resolve().parents[1:2], Path.home().resolve()}
    return sorted(str(path) for path in candidates if len(path.parts) > 1)


def check_pages(
    html_dir: str | Path, screenshots: str | Path | None = None, forbidden: list[str] | None = None
) -> list[PageReport]:
    """Open every HTML page (search and index pages excepted) over a local server at both widths and report on it;
    with `screenshots`, save a full-page screenshot at each width there (NAME-1280.png, NAME-390.png).
    `forbidden`: the absolute paths no page may contain (default: `machine_paths`)."""
    from playwright.sync_api import sync_playwright

    root = Path(html_dir)
    pages = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*.html")
        if p.name not in {"genindex.html", "search.html"} and "_static" not in p.parts
    )
    if not pages:
        raise InvalidInputError(f"no HTML pages under {root}; build the book first")
    forbidden = machine_paths(root) if forbidden is None else forbidden
    reports = []
    with _serve(root) as base, sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium_path(), args=list(CHROMIUM_ARGS))
        try:
            for name in pages:
                report = PageReport(name, machine_paths=_paths_in((root / name).read_text(), forbidden))
                for width in (DESKTOP, PHONE):
                    _check(browser, root, base, report, width, screenshots)
                reports.append(report)
        finally:
            browser.close()
    return reports


def _paths_in(html: str, forbidden: list[str]) -> list[str]:
    """Each forbidden path that occurs in `html` (followed by a separator or the end of a word), with context."""
    found = []
    for path in forbidden:
        match = re.search(rf"{re.escape(path)}(?![\w.-])", html)
        if match:
            found.append(html[max(0, match.start() - 30) : match.end() + 30].replace("\n", " "))
    return found


def _check(browser, root: Path, base: str, report: PageReport, width: int, screenshots: str | Path | None) -> None:
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.on("requestfailed", lambda request: report.failed_requests.append(request.url))
    page.on("response", lambda response: response.status >= 400 and report.failed_requests.append(response.url))
    page.goto(f"{base}/{report.page}", wait_until="networkidle")
    page.wait_for_function("() => !window.MathJax || !MathJax.startup || MathJax.startup.promise !== undefined")
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    if screenshots is not None:
        target = Path(screenshots) / f"{report.page.replace('/', '_').removesuffix('.html')}-{width}.png"
        with atomic_file(target) as tmp:
            page.screenshot(path=str(tmp), full_page=True)
    page.evaluate(UNFOLD)
    report.overflow += [f"at {width} px: {line}" for line in dict.fromkeys(page.evaluate(OVERFLOW, width < DESKTOP))]
    if width == DESKTOP:
        images = page.evaluate("() => [...document.images].map(i => [i.currentSrc || i.src, i.naturalWidth])")
        report.images = len(images)
        report.broken_images = [src for src, natural in images if not natural]
        report.math = page.evaluate("() => document.querySelectorAll('mjx-container').length")
        report.long_decimals = [text for text in page.evaluate(TABLE_CELLS) if LONG_DECIMAL.search(text)]
        report.unrendered_math = page.evaluate(UNRENDERED_MATH)
        report.small_fonts = [
            line for src, shown, natural in page.evaluate(FIGURES) if (line := _small_font(root, src, shown, natural))
        ]
    report.failed_requests = list(dict.fromkeys(report.failed_requests))
    page.close()


def _small_font(root: Path, src: str, shown: float, natural: int) -> str | None:
    """Why a figure's smallest legend or tick-label font is shown too small (see the module's docstring), or None."""
    name = unquote(urlparse(src).path).lstrip("/")
    try:
        record = json.loads(Image.open(root / name).text[FONT_KEY])
    except (OSError, KeyError, AttributeError, ValueError):
        return f"{name} has no font record; draw figures after lp.book.plots.style()"
    if record["smallest_pt"] is None or not natural:
        return None
    shown_pt = record["smallest_pt"] * record["dpi"] / 72 * shown / natural * 72 / 96
    if shown_pt >= MIN_FONT_PT:
        return None
    return f"{name}: its smallest legend or tick label is shown at {shown_pt:.1f} pt (at least {MIN_FONT_PT:g} pt)"
