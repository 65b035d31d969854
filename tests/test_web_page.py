"""The search page at ``/`` in a real browser (Chromium through Playwright) against a real uvicorn
server over a store ingested with the tiny models: text search, thumbnails that load, filters kept in
the URL, the as-of selector, audio players that start at the matching window, upload by file input,
empty and error states, the token form of a protected service (a UTF-8 token too), the assets
toggle; and nothing the Content-Security-Policy blocks."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conftest import make_settings
from omnivec.api.app import create_app
from omnivec.pipeline.run import ingest
from omnivec.sample import build_sample_corpus
from omnivec.store import Store

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pw = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = pw.expect
expect.set_options(timeout=15_000)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "s3cret-token"
DONE = "[data-testid=status][data-state=done]"

# CI installs Debian's chromium (.ci/run) and must not skip this test; elsewhere it is skipped with a reason
if not os.path.exists(CHROMIUM) and os.environ.get("CI"):
    raise RuntimeError(f"CI needs Chromium at {CHROMIUM} for the search-page test (apt-get install chromium)")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}")


def _artifacts_dir() -> Path | None:
    """``$OMNIVEC_TEST_ARTIFACTS``. conftest clears every OMNIVEC_* variable before the tests run,
    so the value is also read from the environment the process started with."""
    value = os.environ.get("OMNIVEC_TEST_ARTIFACTS")
    if value is None and os.path.exists("/proc/self/environ"):
        with open("/proc/self/environ", "rb") as f:
            for entry in f.read().split(b"\0"):
                if entry.startswith(b"OMNIVEC_TEST_ARTIFACTS="):
                    value = entry.split(b"=", 1)[1].decode(errors="replace")
    return Path(value) if value else None


def _screenshot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, "the screenshot is (nearly) empty"
    target = _artifacts_dir()
    if target is not None:
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)


@contextmanager
def _serve(app: Any) -> Iterator[str]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-web-page", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting"
        assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path, tiny_clap_dir: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("web")
    settings = make_settings(root / "store", tiny_clip_dir, tiny_clap_dir)
    corpus = build_sample_corpus(root / "corpus", audio=True)
    report = ingest([str(corpus)], settings)
    files = [p for p in corpus.rglob("*") if p.is_file()]
    assert Store(settings.store).count("items") == len(files)
    return {"settings": settings, "corpus": corpus, "run_name": report.run_name, "files": files}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)  # the first search loads the models
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    violations: list[str] = []
    pg.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    pg.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation',"
                       " e => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));")
    yield pg
    if pg.url.startswith("http"):
        violations += pg.evaluate("window.__csp || []")
    context.close()
    assert not errors, f"the page threw: {errors}"
    assert not violations, f"the Content-Security-Policy blocked: {violations}"


def _wait_done(page: Page) -> None:
    page.wait_for_selector(DONE)
    expect(page.get_by_test_id("result-card").first).to_be_visible()


def _search(page: Page, action: Callable[[], object]) -> None:
    """Do ``action`` and wait until the page shows the results of the search it started."""
    before = int(page.get_by_test_id("status").get_attribute("data-seq") or 0)
    action()
    page.wait_for_function("n => { const s = document.querySelector('[data-testid=status]');"
                           " return +(s.dataset.seq || 0) > n && s.dataset.state !== 'loading'; }", arg=before)
    _wait_done(page)


def _cards(page: Page) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(
        "[data-testid=result-card]",
        "cards => cards.map(c => ({modality: c.dataset.modality, uri: c.dataset.uri,"
        " audio: c.querySelector('audio')?.getAttribute('src') ?? null,"
        " ranks: [...c.querySelectorAll('[data-testid=ranks] li')].map(li => li.textContent)}))")


def _first_thumb_loaded(page: Page) -> dict[str, Any]:
    """The first image card's thumbnail, scrolled into view and loaded (or failed)."""
    img = page.locator("[data-testid=result-card][data-modality=image] img[data-testid=thumb]").first
    img.evaluate("img => { img.closest('[data-testid=result-card]').scrollIntoView();"
                 " return img.complete ? null : new Promise(r => { img.onload = img.onerror = r; }) }")
    return img.evaluate("img => ({src: img.getAttribute('src'), loading: img.loading, width: img.naturalWidth,"
                        " height: img.naturalHeight})")


def _all_thumbs_loaded(page: Page) -> int:
    """Scroll every thumbnail into view (they load lazily); all of them must load. Returns how many."""
    thumbs = page.locator("img[data-testid=thumb]")
    for i in range(thumbs.count()):
        thumbs.nth(i).evaluate("img => img.closest('[data-testid=result-card]').scrollIntoView()")
    page.wait_for_function("() => [...document.querySelectorAll('img[data-testid=thumb]')].every(i => i.complete)")
    broken = page.eval_on_selector_all("img[data-testid=thumb]",
                                       "is => is.filter(i => !i.naturalWidth).map(i => i.getAttribute('src'))")
    assert not broken, f"thumbnails that did not load: {broken}"
    page.evaluate("window.scrollTo(0, 0)")
    return thumbs.count()


def test_search_page_in_a_browser(ingested: dict[str, Any], page: Page, tmp_path: Path) -> None:
    corpus: Path = ingested["corpus"]
    run_name: str = ingested["run_name"]
    n_audio = len(list((corpus / "audio").iterdir()))
    with _serve(create_app(ingested["settings"])) as base:
        response = page.goto(base + "/")
        assert response is not None
        csp = response.headers["content-security-policy"]
        assert {"default-src 'self'", "object-src 'none'", "frame-ancestors 'none'"} <= set(csp.split("; "))
        assert response.headers["x-content-type-options"] == "nosniff"
        expect(page.get_by_test_id("welcome")).to_be_visible()
        # the as-of selector lists the run (with its end time), after "Latest"
        expect(page.locator(f"[data-testid=as-of] option[value='{run_name}']")).to_have_count(1)
        options = page.eval_on_selector_all("[data-testid=as-of] option", "os => os.map(o => o.textContent)")
        assert options[0] == "Latest" and options[1].startswith(run_name + " · ") and len(options) == 2
        expect(page.get_by_test_id("store-summary")).to_contain_text("vectors")

        # a text query: every file of the corpus comes back with k=30
        page.get_by_test_id("k").fill("30")
        page.get_by_test_id("query").fill("a red ball")
        _search(page, page.get_by_test_id("search-button").click)
        cards = _cards(page)
        assert {c["modality"] for c in cards} == {"image", "text", "audio"}
        assert len(cards) == len(ingested["files"])
        assert all(c["ranks"] for c in cards), "every card says which lists ranked it"
        assert re.search(r"[?&]q=a\+red\+ball(&|$)", page.url) and "k=30" in page.url
        thumb = _first_thumb_loaded(page)
        assert thumb["width"] > 0 and thumb["height"] > 0, f"thumbnail did not load: {thumb}"
        assert re.fullmatch(r"/media/[0-9a-f]{32}\?size=320", thumb["src"]) and thumb["loading"] == "lazy"
        marks = page.eval_on_selector_all("[data-testid=snippet] mark", "ms => ms.map(m => m.textContent)")
        assert marks and {m.lower() for m in marks} <= {"red", "ball"} and "ball" in {m.lower() for m in marks}
        assert _all_thumbs_loaded(page) == len(list((corpus / "images").iterdir()))
        _screenshot(page, tmp_path / "search-page.png")

        # searched as of the run: same results, as_of in the URL
        _search(page, lambda: page.get_by_test_id("as-of").select_option(run_name))
        assert f"as_of={run_name}" in page.url
        expect(page.get_by_test_id("status")).to_contain_text(f"as of {run_name}")
        assert len(_cards(page)) == len(ingested["files"])
        _search(page, lambda: page.get_by_test_id("as-of").select_option(""))
        assert "as_of" not in page.url

        # audio only: players that start at the matching window
        _search(page, page.locator("label[for=m-audio]").click)
        assert "modality=audio" in page.url
        cards = _cards(page)
        assert len(cards) == n_audio and {c["modality"] for c in cards} == {"audio"}
        for c in cards:
            assert re.fullmatch(r"/media/[0-9a-f]{32}#t=\d+(\.\d+)?,\d+(\.\d+)?", c["audio"] or ""), c
        players = page.locator("audio[data-testid=audio]")
        expect(players).to_have_count(n_audio)
        assert players.first.get_attribute("preload") == "none"
        fetch_js = ("async src => { const r = await fetch(src.split('#')[0]);"
                    " return [r.status, r.headers.get('content-type'), (await r.arrayBuffer()).byteLength] }")
        served = page.evaluate(fetch_js, cards[0]["audio"])
        assert served[0] == 200 and served[1].startswith("audio/") and served[2] > 1000, served
        _screenshot(page, tmp_path / "search-audio.png")

        # the state is in the URL: a reload shows the same search
        page.reload()
        _wait_done(page)
        expect(page.get_by_test_id("query")).to_have_value("a red ball")
        expect(page.get_by_test_id("modality-audio")).to_be_checked()
        assert {c["modality"] for c in _cards(page)} == {"audio"}

        # upload an image by the file input: its own file comes first
        _search(page, page.locator("label[for=m-all]").click)
        image = next(p for p in sorted((corpus / "images").iterdir()) if p.stem == "red-circle")
        _search(page, lambda: page.get_by_test_id("file-input").set_input_files(str(image)))
        expect(page.get_by_test_id("upload-chip")).to_contain_text(image.name)
        expect(page.get_by_test_id("status")).to_contain_text(f"for {image.name}")
        cards = _cards(page)
        assert cards[0]["uri"] == str(image), cards[0]
        assert "q=" not in page.url
        thumb = _first_thumb_loaded(page)
        assert thumb["width"] > 0, f"thumbnail did not load: {thumb}"
        _screenshot(page, tmp_path / "search-upload.png")

        # back to text (Enter submits); the query is shown as text, never as markup
        page.get_by_role("button", name="Clear the uploaded file").click()
        expect(page.get_by_test_id("welcome")).to_be_visible()
        page.get_by_test_id("query").fill("<b id=injected>bold</b> ball")
        _search(page, lambda: page.get_by_test_id("query").press("Enter"))
        assert page.locator("#injected").count() == 0
        expect(page.get_by_test_id("status")).to_contain_text("<b id=injected>bold</b> ball")
        assert "q=%3Cb+id%3Dinjected%3Ebold%3C%2Fb%3E+ball" in page.url

        # empty results and errors
        page.goto(base + "/?q=anything&modality=audio&space=clip")
        page.wait_for_selector("[data-testid=status][data-state=empty]")
        expect(page.get_by_test_id("status")).to_contain_text("Nothing found")
        expect(page.get_by_test_id("result-card")).to_have_count(0)
        page.goto(base + "/?q=anything&as_of=no-such-run")
        expect(page.get_by_test_id("error")).to_be_visible()
        expect(page.get_by_test_id("error-detail")).to_contain_text("no run named 'no-such-run'")
        expect(page.get_by_test_id("error")).to_contain_text(run_name)  # the remedy names the runs there are


def test_search_page_asks_for_the_token(ingested: dict[str, Any], page: Page) -> None:
    with _serve(create_app(ingested["settings"], token=TOKEN)) as base:
        page.goto(base + "/?q=a+red+circle&modality=image")
        expect(page.get_by_test_id("token-panel")).to_be_visible()
        expect(page.get_by_test_id("result-card")).to_have_count(0)

        page.get_by_test_id("token-input").fill("wrong")
        page.get_by_test_id("token-submit").click()
        expect(page.get_by_test_id("token-panel")).to_have_class(re.compile("refused"))
        expect(page.get_by_test_id("token-panel")).to_be_visible()

        page.get_by_test_id("token-input").fill(TOKEN)
        _search(page, lambda: page.get_by_test_id("token-input").press("Enter"))
        expect(page.get_by_test_id("token-panel")).to_be_hidden()
        assert {c["modality"] for c in _cards(page)} == {"image"}
        cookies = {c["name"]: c for c in page.context.cookies()}
        assert cookies["omnivec_token"]["value"] == TOKEN and cookies["omnivec_token"]["sameSite"] == "Strict"
        thumb = _first_thumb_loaded(page)  # <img> requests carry the cookie, not the header
        assert thumb["width"] > 0, f"thumbnail did not load behind the token: {thumb}"

        # a new visit remembers the token
        page.goto(base + "/?q=tone&modality=audio")
        _wait_done(page)
        expect(page.get_by_test_id("token-panel")).to_be_hidden()
        expect(page.get_by_test_id("as-of").locator("option")).to_have_count(2)


def test_a_utf8_token_with_cookie_breaking_characters(ingested: dict[str, Any], page: Page) -> None:
    token = "pässwörd-ключ; x=1"  # outside Latin-1 (no fetch header can carry it raw), and a ';' and a space
    with _serve(create_app(ingested["settings"], token=token)) as base:
        page.goto(base + "/?q=a+red+circle&modality=image")
        expect(page.get_by_test_id("token-panel")).to_be_visible()
        page.get_by_test_id("token-input").fill(token)
        _search(page, lambda: page.get_by_test_id("token-input").press("Enter"))
        assert {c["modality"] for c in _cards(page)} == {"image"}
        cookie = {c["name"]: c for c in page.context.cookies()}["omnivec_token"]
        assert cookie["value"] == "p%C3%A4ssw%C3%B6rd-%D0%BA%D0%BB%D1%8E%D1%87%3B%20x%3D1"
        thumb = _first_thumb_loaded(page)  # sent with the cookie alone
        assert thumb["width"] > 0, f"thumbnail did not load behind the token: {thumb}"
        page.goto(base + "/?q=circle")  # a new visit reads the cookie back
        _wait_done(page)
        expect(page.get_by_test_id("token-panel")).to_be_hidden()


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> dict[str, Any]:
    from fixtures.assets import PAIRS, write_pairs

    root = tmp_path_factory.mktemp("webassets")
    settings = make_settings(root / "store", tiny_clip_dir)
    assert ingest([str(write_pairs(root / "corpus"))], settings).failed == 0
    return {"settings": settings, "assets": len(PAIRS)}


def test_the_assets_toggle(paired: dict[str, Any], page: Page) -> None:
    with _serve(create_app(paired["settings"])) as base:
        page.goto(base + "/?q=a+red+circle&modality=image")
        _wait_done(page)
        page.get_by_test_id("assets").check()
        page.wait_for_selector("[data-testid=asset-card]")
        page.wait_for_selector(DONE)
        assert "assets=1" in page.url
        cards = page.eval_on_selector_all(
            "[data-testid=asset-card]",
            "cs => cs.map(c => [...c.querySelectorAll('[data-testid=asset-member]')].map(m => m.dataset.modality))")
        assert len(cards) == paired["assets"] and all(sorted(m) == ["image", "text"] for m in cards), cards
        expect(page.get_by_test_id("modality-image")).to_be_disabled()
        expect(page.get_by_test_id("as-of")).to_be_disabled()
        expect(page.get_by_test_id("status")).to_contain_text(f"{paired['assets']} assets")
        thumb = page.locator("[data-testid=asset-card] img[data-testid=thumb]").first
        thumb.evaluate("img => img.complete ? null : new Promise(r => { img.onload = img.onerror = r; })")
        assert thumb.evaluate("img => img.naturalWidth") > 0
        # a reload keeps the toggle; switching it off shows files again, with the modality filter back
        page.reload()
        page.wait_for_selector("[data-testid=asset-card]")
        expect(page.get_by_test_id("assets")).to_be_checked()
        _search(page, lambda: page.get_by_test_id("assets").uncheck())
        assert "assets" not in page.url and {c["modality"] for c in _cards(page)} == {"image"}
