"""The documentation site in a real browser: the built site is served over HTTP and every page
loaded in headless Chromium; every internal link of the rendered page (navigation, table of
contents and text alike) must lead to a built file, and to an anchor that exists there; each
page must render its title; the home page's screenshot must show something.

Slow (a browser start per page); skipped with the reason when Chromium is not on PATH
(Debian: ``apt-get install chromium``) or the site cannot be built (mkdocs missing).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from docs_build import ROOT, build_site

pytestmark = pytest.mark.slow

BROWSER = next(
    (
        path
        for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
        if (path := shutil.which(name))
    ),
    None,
)

# The pages made at build time, and their titles (docs/hooks.py).
GENERATED_TITLES = {
    "config-reference.html": "Configuration reference",
    "curate-reference.html": "Curation config reference",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if BROWSER is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium)")
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    run = build_site(out)
    if run.returncode != 0:
        pytest.skip(
            f"the site cannot be built (tests/test_docs_site.py says why): {run.stderr[-500:]}"
        )
    return out


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server(site) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def chromium(tmp_path: Path, *args: str, timeout: float = 120) -> str:
    """Run headless Chromium (a profile of its own, so that runs side by side do not clash);
    its stdout."""
    profile = tmp_path / "chromium-profile"
    cmd = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"{' '.join(cmd)}: exit {run.returncode}\n{run.stderr[-2000:]}"
    return run.stdout


class _Page(HTMLParser):
    """A page's links, element ids, <title> and <h1> text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.ids: set[str] = set()
        self.title = ""
        self.h1 = ""
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if attrs.get("name") and tag == "a":
            self.ids.add(attrs["name"])
        if tag == "a" and attrs.get("href") is not None:
            self.hrefs.append(attrs["href"])
        if tag in ("title", "h1") and not getattr(self, tag):
            self._in = tag

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in:
            setattr(self, self._in, (getattr(self, self._in) + data).replace("¶", ""))


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.title, page.h1 = " ".join(page.title.split()), " ".join(page.h1.split())
    return page


def expected_title(name: str) -> str:
    """The page's first heading in its Markdown source (docs/X.md), or a generated page's."""
    if name in GENERATED_TITLES:
        return GENERATED_TITLES[name]
    source = ROOT / "docs" / name.replace(".html", ".md")
    first = source.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# "), source
    return first[2:].strip()


def built_file(site: Path, url_path: str) -> Path:
    path = unquote(url_path).lstrip("/")
    target = site / path
    return target / "index.html" if path == "" or path.endswith("/") else target


def test_every_page_loads_renders_its_title_and_links_resolve(site, server, tmp_path):
    pages = sorted(p.name for p in site.glob("*.html") if p.name != "404.html")
    assert len(pages) >= 15
    static_ids: dict[Path, set[str]] = {}
    broken = []
    for name in pages:
        url = urljoin(server, name)
        dom = parse(chromium(tmp_path, "--dump-dom", url))
        assert dom.h1 == expected_title(name), f"{name}: the page shows <h1> {dom.h1!r}"
        # <title>: "PAGE - frugalrl", the home page's "frugalrl"
        assert dom.title == "frugalrl" or dom.title.endswith(" - frugalrl"), name
        assert (dom.title == "frugalrl") == (name == "index.html"), name
        for href in dom.hrefs:
            target = urlsplit(urljoin(url, href))
            if target.scheme not in ("http", "https") or target.netloc != urlsplit(server).netloc:
                continue  # another site, mailto:, javascript:
            file = built_file(site, target.path)
            if not file.is_file():
                broken.append(f"{name}: {href} (no {file.relative_to(site)})")
                continue
            if target.fragment and file.suffix == ".html":
                if file == site / name:
                    ids = dom.ids
                else:
                    ids = static_ids.setdefault(file, parse(file.read_text("utf-8")).ids)
                if unquote(target.fragment) not in ids:
                    broken.append(f"{name}: {href} (no #{target.fragment} in {file.name})")
    assert broken == []


def test_home_page_screenshot_shows_something(site, server, tmp_path):
    shot = tmp_path / "index.png"
    chromium(
        tmp_path, f"--screenshot={shot}", "--window-size=1280,900", urljoin(server, "index.html")
    )
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000, f"a {len(data)}-byte screenshot: an empty page?"
    try:
        from PIL import Image
    except ImportError:  # the size must do
        return
    with Image.open(shot) as image:
        assert image.size == (1280, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) one colour"
    # text drawn: a good share of the pixels is not the page's background colour
    background = max(colours)[0]
    assert background < 0.97 * 1280 * 900
