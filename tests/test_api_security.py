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
    # an open prefix does not open what a dot segment leads to (the server decodes %2e%2e to ..)
    assert c.get("/static/%2e%2e/spaces").status_code == 401


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


def test_cors_preflight_needs_no_token_and_a_refusal_is_readable(built):
    c = TestClient(create_app(built[0], token="t0ken", cors_origins=["http://app.example"]))
    r = c.options("/spaces", headers={"Origin": "http://app.example", "Access-Control-Request-Method": "GET",
                                      "Access-Control-Request-Headers": "Authorization"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example"
    r = c.get("/spaces", headers={"Origin": "http://app.example"})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "http://app.example"
    r = c.get("/spaces", headers={"Origin": "http://app.example", "Authorization": "Bearer t0ken"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example"


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


# --------------------------------------------------------------------------- headers and HEAD


def test_every_response_carries_the_security_headers(built):
    settings, _ = built
    c = TestClient(create_app(settings, token="t0ken", max_upload_bytes=1024))
    item_id = Store(settings.store).read("items").to_pylist()[0]["item_id"]
    auth = {"Authorization": "Bearer t0ken"}
    answers = {"/": c.get("/"), "/static/app.js": c.get("/static/app.js"), "/healthz": c.get("/healthz"),
               "401": c.get("/spaces"), "404": c.get("/media/" + "0" * 32, headers=auth),
               "/media": c.get(f"/media/{item_id}", headers=auth), "/search": c.get("/search?q=x", headers=auth),
               "413": c.post("/search", headers=auth, files={"file": ("a.jpg", b"\xff" * 4096)}),
               "422": c.get("/search", headers=auth), "/docs": c.get("/docs")}
    assert [answers[k].status_code for k in ("401", "404", "413", "422")] == [401, 404, 413, 422]
    for name, r in answers.items():
        assert r.headers["x-content-type-options"] == "nosniff", name
        assert r.headers["referrer-policy"] == "no-referrer", name
        if name != "/docs":  # Swagger UI loads its script from a CDN
            policy = set(r.headers["content-security-policy"].split("; "))
            assert {"default-src 'self'", "object-src 'none'", "frame-ancestors 'none'"} <= policy, name
    assert "content-security-policy" not in answers["/docs"].headers


def test_head_answers_wherever_get_does(client, built):
    settings, _ = built
    item_id = Store(settings.store).read("items").to_pylist()[0]["item_id"]
    for path in ("/", "/healthz", f"/media/{item_id}", f"/items/{item_id}", "/search?q=circle&k=3", "/spaces",
                 "/runs", "/static/app.js", "/openapi.json"):
        got, head = client.get(path), client.head(path)
        assert got.status_code == 200 and head.status_code == 200, (path, head.status_code)
        assert head.content == b"" and head.headers.get("content-length") == got.headers.get("content-length"), path
    assert client.head("/media/" + "0" * 32).status_code == 404


# --------------------------------------------------------------------------- parameters


def test_unknown_search_parameters_are_refused_by_name(client, built):
    r = client.get("/search", params={"q": "circle", "modalty": "image"})
    assert r.status_code == 400 and "'modalty'" in r.json()["detail"] and "modality" in r.json()["detail"]
    r = client.get("/search", params={"q": "circle", "K": "3", "hybird": "1"})
    assert r.status_code == 400 and "'K', 'hybird'" in r.json()["detail"]
    img = sorted((built[1] / "images").iterdir())[0]
    r = client.post("/search", files={"file": (img.name, img.read_bytes())}, data={"kk": "3"})
    assert r.status_code == 400 and "form field 'kk'" in r.json()["detail"]
    r = client.post("/search?k=3", files={"file": (img.name, img.read_bytes())})
    assert r.status_code == 400 and "query parameter 'k'" in r.json()["detail"]
    assert client.post("/search", files={"file": (img.name, img.read_bytes())}, data={"k": "3"}).status_code == 200


def test_a_space_switched_off_is_never_loaded(built, tiny_clip_dir):
    from omnivec.api.warm import warm_encoders
    from omnivec.encoders import load_count

    settings, _ = built
    off = make_settings(Path(settings.store), tiny_clip_dir)  # the store has clap vectors; clap is off here
    assert not off.spaces["clap"].enabled and "clap" in {n for n, _, _ in Store(settings.store).vector_tables()}
    c = TestClient(create_app(off, token=""))
    loads = load_count()
    r = c.get("/search", params={"q": "a bird", "space": "clap"})
    assert r.status_code == 400 and "switched off" in r.json()["detail"] and r.json()["remedies"]
    r = c.post("/search", files={"file": ("a.jpg", good_jpeg())}, data={"space": "clap"})
    assert r.status_code == 400 and "switched off" in r.json()["detail"]
    assert load_count() == loads
    assert not any(line.startswith("space clap") for line in warm_encoders(off))


# --------------------------------------------------------------------------- assets


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Settings:
    from fixtures.assets import write_pairs
    from omnivec.pipeline.run import ingest

    root = tmp_path_factory.mktemp("apiassets")
    settings = make_settings(root / "store", tiny_clip_dir)
    assert ingest([str(write_pairs(root / "corpus"))], settings).failed == 0
    return settings


def test_search_assets(paired):
    from fixtures.assets import PAIRS
    from omnivec.query_assets import search_assets

    c = TestClient(create_app(paired, token=""))
    r = c.get("/search", params={"q": "a red circle", "assets": "true", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    want = search_assets("a red circle", k=5, settings=paired)
    assert body["assets"] is True and [h["asset_id"] for h in body["hits"]] == [a.asset_id for a in want]
    assert len(body["hits"]) == len(PAIRS)
    for hit in body["hits"]:
        assert sorted(m["modality"] for m in hit["members"]) == ["image", "text"]
        for m in hit["members"]:
            assert c.get(m["media_url"]).status_code == 200
    files = c.get("/search", params={"q": "a red circle", "k": 5}).json()
    assert "assets" not in files and all("item_id" in h for h in files["hits"])
    png = next(Path(m["uri"]) for m in body["hits"][0]["members"] if m["modality"] == "image")
    r = c.post("/search", files={"file": (png.name, png.read_bytes())}, data={"assets": "true"})
    assert r.status_code == 200 and r.json()["assets"] is True and len(r.json()["hits"]) == len(PAIRS)


@pytest.mark.parametrize("extra", [{"where": "uri=*"}, {"hybrid": "true"}, {"modality": "image"}, {"as_of": "1"}])
def test_assets_refuse_what_they_cannot_honour(paired, extra):
    c = TestClient(create_app(paired, token=""))
    r = c.get("/search", params={"q": "a red circle", "assets": "true", **extra})
    assert r.status_code == 400 and "assets=true takes no where, hybrid, modality or as_of" in r.json()["detail"]


# --------------------------------------------------------------------------- token


UTF8_TOKEN = "pässwörd-ключ"


def test_a_utf8_token_from_the_header_and_the_cookie(built):
    from urllib.parse import quote

    settings, _ = built
    c = TestClient(create_app(settings, token=UTF8_TOKEN))
    raw = UTF8_TOKEN.encode()
    for value in (b"Bearer " + raw, b"Bearer " + quote(UTF8_TOKEN).encode(), b"bearer  " + raw):
        assert c.get("/spaces", headers={"Authorization": value}).status_code == 200, value
    for value in (quote(UTF8_TOKEN).encode(), raw, b'"' + quote(UTF8_TOKEN).encode() + b'"'):
        assert c.get("/spaces", headers={"Cookie": b"other=1; omnivec_token=" + value}).status_code == 200, value
    latin1 = UTF8_TOKEN.encode("utf-8").decode("latin-1")  # how Starlette decodes header bytes
    for wrong in (b"Bearer " + UTF8_TOKEN[:-1].encode(), b"Bearer " + latin1.encode("latin-1") + b"x",
                  b"Bearer " + "pässwörd".encode("latin-1"), b"Bearer"):
        assert c.get("/spaces", headers={"Authorization": wrong}).status_code == 401, wrong
    assert c.get("/spaces", headers={"Cookie": b"omnivec_token=p%C3%A4ss"}).status_code == 401


def test_with_a_token_messages_do_not_name_where_the_store_is(built):
    settings, _ = built
    where = os.path.abspath(settings.store)
    open_service = TestClient(create_app(settings, token=""))
    r = open_service.get("/search", params={"q": "circle", "assets": "true"})
    assert r.status_code == 400 and where in r.json()["detail"]  # without a token the path helps the operator
    guarded = TestClient(create_app(settings, token="t0ken"), headers={"Authorization": "Bearer t0ken"})
    for r in (guarded.get("/search", params={"q": "circle", "assets": "true"}),
              guarded.post("/search", files={"file": ("a.jpg", good_jpeg())}, data={"assets": "true"})):
        assert r.status_code == 400, r.text
        assert where not in r.text and settings.store not in r.text and "the store" in r.json()["detail"], r.text
