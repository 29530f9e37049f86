"""The course's website (`make site`), opened in Chromium: every page renders, every figure loads,
no internal link is broken, and nothing is fetched from the network.

Builds the site as `make site` does (Sphinx + MyST-NB from the committed notebooks, nothing
executed; `site/conf.py`) into a folder of its own, serves it on a free localhost port and opens
every page in Debian's `chromium` with Playwright (as tests/test_browser.py does). Screenshots go to
build/site-shots/ (or $D2L_BROWSER_OUT/site).

Runs with `make browser` (or D2L_BROWSER=1): it needs /usr/bin/chromium.
"""

import functools
import json
import os
import re
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
OUT = Path(os.environ["D2L_BROWSER_OUT"]) / "site" if "D2L_BROWSER_OUT" in os.environ \
    else ROOT / "build" / "site-shots"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
PAGE_S = 30  # the time a page may take to load and render
# MathJax 2 first looks for its TeX fonts, which the package that ships it leaves out, then uses the
# STIX-Web fonts it does ship: those look-ups fail by design
FONT_PROBE = re.compile(r"/_static/mathjax/fonts/HTML-CSS/TeX/")

pytestmark = pytest.mark.skipif(
    os.environ.get("D2L_BROWSER") != "1" or not CHROMIUM.exists(),
    reason="the site test runs with `make browser` (needs /usr/bin/chromium, D2L_BROWSER=1)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site as `make site` builds it, served on 127.0.0.1; yields (base URL, folder)."""
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-c", "site", ".", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    handler = functools.partial(_QuietHandler, directory=str(out))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", out
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield b
        b.close()


def pages(folder: Path) -> list[str]:
    """The site's pages, relative to its root: the front page, the Chinese README, every notebook."""
    return ["README.html", "README.zh-CN.html"] + [f"notebooks/{p.stem}.html" for p in NOTEBOOKS]


def image_outputs(path: Path) -> int:
    """The figures a committed notebook holds: its image outputs (png, jpeg, svg)."""
    nb = json.loads(path.read_text())
    return sum(1 for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
               if any(k.startswith("image/") for k in o.get("data", {})))


def test_the_site_has_every_notebook_in_reading_order(site):
    base, folder = site
    assert (folder / "index.html").read_text().count("README.html") >= 1  # index.html leads to the front page
    front = (folder / "README.html").read_text()
    order = [front.find(f'notebooks/{p.stem}.html') for p in NOTEBOOKS]
    assert -1 not in order, [p.stem for p, i in zip(NOTEBOOKS, order) if i == -1]
    assert order == sorted(order), "the front page's navigation lists the notebooks out of order"
    for caption in ("The chapter", "The exercises", "Beyond the chapter"):
        assert caption in front


@pytest.mark.parametrize("page_path", pages(ROOT), ids=lambda p: Path(p).stem)
def test_page_renders_with_its_figures_and_links(site, browser, page_path):
    base, folder = site
    url = urljoin(base, page_path)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside, failed, errors = [], [], []

    def route(r):  # the site needs no network: anything not on this server is refused and recorded
        if r.request.url.startswith(base):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("requestfailed", lambda r: failed.append(r.url)
            if r.url.startswith(base) and not FONT_PROBE.search(r.url) else None)
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}")
            if r.status >= 400 and not FONT_PROBE.search(r.url) else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        response = page.goto(url, timeout=PAGE_S * 1000, wait_until="load")
        assert response is not None and response.ok, f"{page_path}: {response and response.status}"
        # images may load lazily: load them all, then wait until each has finished
        page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=PAGE_S * 1000)
        title = page.locator("article h1").first.inner_text()
        assert title.strip(), f"{page_path}: no title"
        broken_images = page.evaluate("""Array.from(document.images)
            .filter(i => !(i.naturalWidth > 0)).map(i => i.getAttribute('src'))""")
        assert not broken_images, f"{page_path}: figures that do not load: {broken_images}"
        if page_path.startswith("notebooks/"):
            figures = page.evaluate("document.querySelectorAll('article .cell_output img').length")
            expected = image_outputs(ROOT / "notebooks" / (Path(page_path).stem + ".ipynb"))
            assert figures == expected, f"{page_path}: {figures} figures shown, the notebook holds {expected}"
            if page.locator("article .math").count():  # formulas: MathJax typesets them
                page.wait_for_function("document.querySelectorAll('.MathJax_CHTML, .MathJax').length > 0",
                                       timeout=PAGE_S * 1000)
        _check_links(page, base, folder, page_path)
        page.screenshot(path=str(OUT / f"{Path(page_path).stem}.png"))
        page.evaluate("window.scrollTo(0, document.body.scrollHeight / 2)")
        page.screenshot(path=str(OUT / f"{Path(page_path).stem}.middle.png"))
    finally:
        page.close()
    assert not failed, f"{page_path}: requests that failed: {failed}"
    assert not outside, f"{page_path}: the page asks the network for {outside}"
    assert not errors, f"{page_path}: script errors: {errors}"


def _check_links(page, base, folder, page_path):
    """Every link that stays on the site points at a file that exists and, with #id, an element on it."""
    hrefs = page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    broken = []
    ids_cache: dict[Path, set[str]] = {}
    for href in hrefs:
        if not href.startswith(base):
            continue
        target, fragment = urldefrag(href)
        path = folder / urlparse(target).path.removeprefix(urlparse(base).path)
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            broken.append(href)
            continue
        if fragment and path.suffix == ".html":
            if path not in ids_cache:
                ids_cache[path] = set(re.findall(r'\bid="([^"]+)"', path.read_text(encoding="utf-8")))
            if fragment not in ids_cache[path]:
                broken.append(href)
    assert not broken, f"{page_path}: internal links to nothing: {sorted(set(broken))}"
