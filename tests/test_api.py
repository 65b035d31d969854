"""The query service over a real store built by the tiny models, through httpx (the app in-process,
and a real uvicorn server on 127.0.0.1 for concurrent requests)."""

from __future__ import annotations

import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import make_settings
from omnivec.api import create_app
from omnivec.config import Settings
from omnivec.query import search
from omnivec.store import Store


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path, tiny_clap_dir: Path
          ) -> tuple[Settings, Path, str]:
    """A store of 18 images, 6 texts and 5 sounds (clip + clap spaces); returns (settings, corpus, run name)."""
    from omnivec.pipeline.run import ingest
    from omnivec.sample import build_sample_corpus

    root = tmp_path_factory.mktemp("api")
    corpus = build_sample_corpus(root / "corpus", audio=True)
    settings = make_settings(root / "store", tiny_clip_dir, tiny_clap_dir, batch_size=8)
    report = ingest([str(corpus)], settings)
    assert report.failed == 0
    return settings, corpus, report.run_name


@pytest.fixture(scope="module")
def client(built: tuple[Settings, Path, str]) -> TestClient:
    return TestClient(create_app(built[0], token=""))


def _uri(corpus: Path, sub: str) -> Path:
    return sorted((corpus / sub).iterdir())[0]


def test_text_search_matches_the_python_api(client, built):
    settings, _, _ = built
    r = client.get("/search", params={"q": "a red circle", "k": 5})
    assert r.status_code == 200
    hits = r.json()["hits"]
    want = search("a red circle", k=5, settings=settings)
    assert [h["uri"] for h in hits] == [h.uri for h in want] and len(hits) == 5
    assert [h["ranks"] for h in hits] == [h.ranks for h in want]
    assert all(h["media_url"] == f"/media/{h['item_id']}" for h in hits)


def test_search_filters(client, built):
    settings, _, run_name = built
    images = client.get("/search", params={"q": "circle", "modality": "image", "k": 4}).json()["hits"]
    assert len(images) == 4 and {h["modality"] for h in images} == {"image"}
    audio = client.get("/search", params={"q": "a bird chirping", "space": "clap", "modality": "audio"}).json()["hits"]
    assert audio and {h["modality"] for h in audio} == {"audio"} and all(h["start_s"] is not None for h in audio)
    assert {h["space"] for h in audio} == {"clap"}
    hybrid = client.get("/search", params={"q": "bread dough", "hybrid": True, "space": "clip"}).json()["hits"]
    assert any("fts:clip" in h["ranks"] for h in hybrid)
    as_of = client.get("/search", params={"q": "circle", "as_of": run_name, "k": 3})
    assert as_of.status_code == 200 and len(as_of.json()["hits"]) == 3
    where = client.get("/search", params={"q": "circle", "where": "uri=*/texts/*"}).json()["hits"]
    assert where and all("/texts/" in h["uri"] for h in where)


def test_bad_search_parameters_are_400_or_422_with_a_reason(client):
    r = client.get("/search", params={"q": "x", "modality": "video"})
    assert r.status_code == 400 and "modality" in r.json()["detail"]
    r = client.get("/search", params={"q": "x", "space": "nope"})
    assert r.status_code == 400 and "nope" in r.json()["detail"]
    r = client.get("/search", params={"q": "x", "as_of": "ingest-19990101-000000-dead"})
    assert r.status_code == 400 and r.json()["detail"]
    assert client.get("/search", params={"q": ""}).status_code == 422
    assert client.get("/search", params={"q": "x", "k": 0}).status_code == 422
    assert client.get("/search").status_code == 422


def test_upload_search_finds_the_same_file_first(client, built):
    _, corpus, _ = built
    img = _uri(corpus, "images")
    r = client.post("/search", files={"file": (img.name, img.read_bytes(), "image/jpeg")}, data={"k": "3"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"]["kind"] == "image" and body["hits"][0]["uri"] == str(img)
    sound = _uri(corpus, "audio")
    r = client.post("/search", files={"file": (sound.name, sound.read_bytes())}, data={"modality": "audio"})
    assert r.status_code == 200, r.text
    hit = r.json()["hits"][0]
    assert r.json()["query"]["kind"] == "audio" and hit["uri"] == str(sound) and hit["start_s"] is not None


def test_items_and_media(client, built):
    settings, corpus, _ = built
    store = Store(settings.store)
    items = {r["uri"]: r for r in store.read("items").to_pylist()}
    img, txt, snd = _uri(corpus, "images"), _uri(corpus, "texts"), _uri(corpus, "audio")

    r = client.get(f"/items/{items[str(img)]['item_id']}")
    assert r.status_code == 200
    body = r.json()
    assert body["item"]["uri"] == str(img) and any(k.startswith("clip:") for k in body["segments"])

    r = client.get(f"/media/{items[str(img)]['item_id']}", params={"size": 64})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(r.content))
    assert max(thumb.size) <= 64 and thumb.format == "JPEG"
    assert client.get(f"/media/{items[str(img)]['item_id']}", params={"size": 5000}).status_code == 422

    r = client.get(f"/media/{items[str(snd)]['item_id']}")
    assert r.status_code == 200 and r.content == snd.read_bytes() and r.headers["content-type"].startswith("audio/")
    part = client.get(f"/media/{items[str(snd)]['item_id']}", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == snd.read_bytes()[:100]

    r = client.get(f"/media/{items[str(txt)]['item_id']}")
    assert r.status_code == 200 and r.text == txt.read_text(encoding="utf-8")


def test_spaces_runs_health_and_docs(client, built):
    _, _, run_name = built
    spaces = client.get("/spaces").json()
    assert {s["name"] for s in spaces} == {"clip", "clap"} and all(s["vectors"] > 0 and s["default"] for s in spaces)
    runs = client.get("/runs").json()
    assert runs[0]["run_name"] == run_name and runs[0]["counts"]["image"]["new"] == 18
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/search", "/items/{item_id}", "/media/{item_id}", "/spaces", "/runs", "/healthz"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and page.text.lower().startswith("<!doctype html")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_concurrent_requests_on_a_real_server_agree_with_sequential_ones(built):
    import uvicorn

    settings, corpus, _ = built
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, token=""), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    queries = ["a red circle", "a bird chirping", "bread", "the night sky", "a steam train", "green square"]
    images = sorted((corpus / "images").iterdir())[:4]
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            want = {q: c.get("/search", params={"q": q}).json()["hits"] for q in queries}
            want_img = {p.name: c.post("/search", files={"file": (p.name, p.read_bytes())}).json()["hits"]
                        for p in images}

        def one(i: int) -> tuple[str, Any]:
            with httpx.Client(base_url=base, timeout=60) as c:
                if i % 3 == 2:
                    p = images[i % len(images)]
                    r = c.post("/search", files={"file": (p.name, p.read_bytes())})
                    return "img:" + p.name, r
                q = queries[i % len(queries)]
                return q, c.get("/search", params={"q": q})

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(48)))
    finally:
        server.should_exit = True
        thread.join(10)
    for key, r in results:
        assert r.status_code == 200, r.text
        expected = want_img[key[4:]] if key.startswith("img:") else want[key]
        assert [h["uri"] for h in r.json()["hits"]] == [h["uri"] for h in expected]
