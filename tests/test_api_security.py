"""The query service refuses what it must: paths from requests, ids not in the store, oversized or
undecodable uploads, missing tokens; and no route writes to the store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import make_settings
from fixtures.bad_files import good_jpeg
from omnivec.api import create_app
from omnivec.config import Settings
from omnivec.store import Store


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path, tiny_clap_dir: Path) -> tuple[Settings, Path]:
    from omnivec.pipeline.run import ingest
    from omnivec.sample import build_sample_corpus

    root = tmp_path_factory.mktemp("apisec")
    corpus = build_sample_corpus(root / "corpus", audio=True)
    (root / "secret.txt").write_text("outside the corpus: must never be served\n")
    settings = make_settings(root / "store", tiny_clip_dir, tiny_clap_dir, batch_size=8)
    assert ingest([str(corpus)], settings).failed == 0
    return settings, corpus


@pytest.fixture(scope="module")
def client(built) -> TestClient:
    return TestClient(create_app(built[0], token="", max_upload_bytes=64 * 1024))


@pytest.mark.parametrize("item_id", [
    "..%2F..%2Fsecret.txt",
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "%2E%2E",
    "0" * 32,  # well-formed, not in the store
    "ABCDEF0123456789ABCDEF0123456789",  # upper case: not an omnivec id
    "abc' OR '1'='1",
    "0" * 31 + "g",
])
def test_media_and_items_refuse_anything_that_is_not_a_stored_item(client, item_id):
    for route in ("media", "items"):
        r = client.get(f"/{route}/{item_id}")
        assert r.status_code == 404, (route, item_id, r.status_code)
        assert "outside the corpus" not in r.text and "root:" not in r.text


def test_traversal_in_the_raw_path_does_not_reach_files(client):
    for raw in ("/media/../../secret.txt", "/media/%2e%2e/%2e%2e/etc/passwd", "/static/../../secret.txt",
                "/static/%2e%2e/app.py"):
        r = client.get(raw)
        assert r.status_code == 404, (raw, r.status_code)
        assert "outside the corpus" not in r.text and "create_app" not in r.text


def test_an_item_whose_file_is_gone_is_404(client, built, tmp_path):
    settings, corpus = built
    row = next(r for r in Store(settings.store).read("items").to_pylist() if r["modality"] == "text")
    moved = tmp_path / "moved"
    shutil.move(row["uri"], moved)
    try:
        r = client.get(f"/media/{row['item_id']}")
        assert r.status_code == 404 and "no longer" in r.json()["detail"]
    finally:
        shutil.move(moved, row["uri"])
    assert client.get(f"/media/{row['item_id']}").status_code == 200


def test_oversized_upload_is_413(client):
    big = b"\xff\xd8\xff" + os.urandom(64 * 1024)
    r = client.post("/search", files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("random.jpg", os.urandom(2048), "not a recognised file"),
    ("doc.jpg", b"%PDF-1.4\n" + b"x" * 100, "PDF document"),
    ("truncated.jpg", good_jpeg()[:200], "corrupt image"),
    ("empty.png", b"", "empty"),
    ("noise.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(64), ""),
])
def test_undecodable_upload_is_400_with_a_reason(client, name, data, reason):
    r = client.post("/search", files={"file": (name, data)})
    assert r.status_code == 400, (name, r.status_code, r.text)
    detail = r.json()["detail"]
    assert detail and reason.lower() in detail.lower()
    assert "/tmp" not in detail  # the server's temporary path is not leaked


def test_token(built):
    settings, corpus = built
    c = TestClient(create_app(settings, token="s3cret-token"))
    item_id = Store(settings.store).read("items").to_pylist()[0]["item_id"]
    for path in ("/search?q=circle", f"/items/{item_id}", f"/media/{item_id}", "/spaces", "/runs"):
        assert c.get(path).status_code == 401, path
        assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
        assert c.get(path, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200, path
    assert c.post("/search", files={"file": ("a.jpg", good_jpeg())}).status_code == 401
    c.cookies.set("omnivec_token", "s3cret-token")  # what the page sets, for <img> and <audio>
    assert c.get(f"/media/{item_id}").status_code == 200
    c.cookies.clear()
    assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200  # hold no data


def test_token_from_the_environment(built, monkeypatch):
    monkeypatch.setenv("OMNIVEC_API_TOKEN", "from-env")
    c = TestClient(create_app(built[0]))
    assert c.get("/spaces").status_code == 401
    assert c.get("/spaces", headers={"Authorization": "Bearer from-env"}).status_code == 200


def test_cors_is_off_by_default(client, built):
    r = client.get("/spaces", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    on = TestClient(create_app(built[0], token="", cors_origins=["http://app.example"]))
    r = on.get("/spaces", headers={"Origin": "http://app.example"})
    assert r.headers.get("access-control-allow-origin") == "http://app.example"


def test_no_route_writes_to_the_store(built):
    settings, corpus = built
    store = Store(settings.store)
    before = {name: store.table(name).version for name in store.table_names()}
    files = sorted(os.listdir(settings.store))
    app = create_app(settings, token="")
    methods = {(m, r.path) for r in app.routes for m in getattr(r, "methods", set())}
    assert {m for m, _ in methods} <= {"GET", "HEAD", "POST"}
    assert {p for m, p in methods if m == "POST"} == {"/search"}

    c = TestClient(app)
    item_id = store.read("items").to_pylist()[0]["item_id"]
    img = sorted((corpus / "images").iterdir())[0]
    for path in ("/healthz", "/search?q=circle&hybrid=true", f"/items/{item_id}", f"/media/{item_id}", "/spaces",
                 "/runs", "/", "/docs", "/openapi.json"):
        assert c.get(path).status_code == 200, path
    assert c.post("/search", files={"file": (img.name, img.read_bytes())}).status_code == 200
    for method in ("PUT", "DELETE", "PATCH"):
        assert c.request(method, f"/items/{item_id}").status_code == 405
    after = Store(settings.store)
    assert {name: after.table(name).version for name in after.table_names()} == before
    assert sorted(os.listdir(settings.store)) == files
