"""``/media`` serves only the bytes that were ingested: a file swapped for a link, rewritten in place,
replaced by a hard link or reached through a swapped folder is refused with 409, never served;
Range requests are answered from the checked descriptor; a check is remembered until the file's
stat changes; thumbnails decode each file once and at most N images at once."""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from PIL import Image

from conftest import make_settings
from fixtures.audio_files import sine
from fixtures.served import connect, serve
from omnivec.api import create_app
from omnivec.api.thumbs import _decode_reduced
from omnivec.config import Settings
from omnivec.errors import DecodeError
from omnivec.store import Store

SECRET = b"outside the corpus: must never be served\n"
CHANGED = "the file changed since it was ingested; run `omnivec ingest` again"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path, tiny_clap_dir: Path
          ) -> tuple[Settings, Path, dict[str, dict[str, Any]]]:
    """Images, texts, a manifest caption and two sounds (one of 12 MB); returns (settings, root, items by uri)."""
    from omnivec.pipeline.run import ingest
    from omnivec.sample import build_sample_corpus

    root = tmp_path_factory.mktemp("apimedia")
    corpus = build_sample_corpus(root / "corpus", audio=True)
    (corpus / "notes.csv").write_text("id,caption\nn1,a red circle drawn on white paper\n", encoding="utf-8")
    sf.write(corpus / "audio" / "long.wav", sine(125.0, 48000, 330.0), 48000, subtype="PCM_16")
    (root / "outside").mkdir()
    settings = make_settings(root / "store", tiny_clip_dir, tiny_clap_dir, batch_size=8)
    assert ingest([str(corpus)], settings).failed == 0
    items = {r["uri"]: r for r in Store(settings.store).read("items").to_pylist()}
    return settings, root, items


@pytest.fixture
def app(built):
    return create_app(built[0], token="")


@pytest.fixture
def client(app) -> TestClient:
    return TestClient(app)


def _item(built, sub: str, suffix: str = "") -> tuple[Path, dict[str, Any]]:
    _, root, items = built
    path = next(p for p in sorted((root / "corpus" / sub).iterdir()) if p.name.endswith(suffix))
    return path, items[str(path)]


class restored:
    """Puts a file (or folder) back as it was, whatever the test did to its path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keep = path.with_name(path.name + ".keep")

    def __enter__(self) -> Path:
        os.rename(self.path, self.keep)
        if self.keep.is_dir():
            shutil.copytree(self.keep, self.path, symlinks=True)
        else:
            shutil.copy2(self.keep, self.path)
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.path.is_dir() and not self.path.is_symlink():
            shutil.rmtree(self.path)
        elif os.path.lexists(self.path):
            os.unlink(self.path)
        os.rename(self.keep, self.path)


def _refused(r: Any) -> None:
    assert r.status_code == 409, (r.status_code, r.content[:200])
    assert r.json()["detail"].startswith(CHANGED)
    assert SECRET not in r.content


def test_every_kind_of_item_is_served_while_it_holds_the_ingested_bytes(client, built):
    _, root, items = built
    img, img_row = _item(built, "images", ".png")
    txt, txt_row = _item(built, "texts")
    snd, snd_row = _item(built, "audio", ".wav")
    r = client.get(f"/media/{img_row['item_id']}", params={"size": 64})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.content)).size) <= 64
    r = client.get(f"/media/{txt_row['item_id']}")
    assert r.status_code == 200 and r.text == txt.read_text(encoding="utf-8")
    r = client.get(f"/media/{snd_row['item_id']}")
    assert r.status_code == 200 and r.content == snd.read_bytes()
    assert r.headers["etag"] == f'"{snd_row["content_hash"]}"'
    caption = next(row for uri, row in items.items() if "#row=" in uri)
    r = client.get(f"/media/{caption['item_id']}")
    assert r.status_code == 200 and r.text == "a red circle drawn on white paper"


@pytest.mark.parametrize("sub", ["texts", "audio"])
def test_a_file_swapped_for_a_link_to_a_secret_is_refused(client, built, sub):
    path, row = _item(built, sub)
    secret = built[1] / "outside" / f"secret-{sub}"
    secret.write_bytes(SECRET)
    with restored(path):
        os.unlink(path)
        os.symlink(secret, path)
        r = client.get(f"/media/{row['item_id']}")
        _refused(r)
        assert SECRET[:16] not in r.content
    assert client.get(f"/media/{row['item_id']}").status_code == 200


def test_a_link_is_served_only_to_the_ingested_bytes(client, built):
    """A file ingested through a link is served at the link's target once its bytes check out; a link to
    anything else (a same-size file, a link to a link to the secret) is refused."""
    path, row = _item(built, "texts")
    original = path.read_bytes()
    copy = built[1] / "outside" / "copy.txt"
    shutil.copy(path, copy)
    other = built[1] / "outside" / "same-size.txt"
    other.write_bytes(bytes(255 - b for b in original))
    hop = built[1] / "outside" / "hop"
    os.symlink(other, hop)
    with restored(path):
        os.unlink(path)
        os.symlink(copy, path)
        r = client.get(f"/media/{row['item_id']}")
        assert r.status_code == 200 and r.content == original
        for target in (other, hop):
            os.unlink(path)
            os.symlink(target, path)
            r = client.get(f"/media/{row['item_id']}")
            assert r.status_code == 409 and r.json()["detail"].startswith(CHANGED)
            assert other.read_bytes()[:32] not in r.content


@pytest.mark.parametrize("sub", ["texts", "audio", "images"])
def test_same_size_other_content_is_refused_even_with_the_old_mtime(client, built, sub):
    path, row = _item(built, sub)
    original = path.read_bytes()
    assert client.get(f"/media/{row['item_id']}").status_code == 200  # checked once, remembered
    st = path.stat()
    with restored(path):
        other = bytes(255 - b for b in original)
        assert len(other) == len(original) and other != original
        path.write_bytes(other)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the mtime it was ingested with; ctime moves
        assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
        r = client.get(f"/media/{row['item_id']}")
        assert r.status_code == 409 and r.json()["detail"].startswith(CHANGED)
        assert other[:64] not in r.content
    assert client.get(f"/media/{row['item_id']}").status_code == 200


def test_a_hard_link_to_a_secret_of_the_same_size_is_refused(client, built):
    path, row = _item(built, "audio", ".wav")
    secret = built[1] / "outside" / "secret.wav"
    data = path.read_bytes()
    secret.write_bytes(data[:44] + SECRET * (len(data) // len(SECRET) + 1))
    with open(secret, "r+b") as fh:
        fh.truncate(len(data))
    assert secret.stat().st_size == len(data) and secret.read_bytes() != data
    with restored(path):
        os.unlink(path)
        os.link(secret, path)
        _refused(client.get(f"/media/{row['item_id']}"))
        _refused(client.get(f"/media/{row['item_id']}", headers={"Range": "bytes=44-200"}))


def test_a_hard_link_to_the_ingested_file_itself_is_served(client, built):
    path, row = _item(built, "texts")
    other = built[1] / "outside" / "another-name.txt"
    os.link(path, other)  # a second name: the file's ctime and link count change, its bytes do not
    try:
        r = client.get(f"/media/{row['item_id']}")
        assert r.status_code == 200 and r.content == path.read_bytes()
    finally:
        os.unlink(other)


def test_a_folder_on_the_path_replaced_by_a_link(client, built):
    path, row = _item(built, "texts")
    folder = path.parent
    fake = built[1] / "outside" / "texts"
    fake.mkdir(exist_ok=True)
    (fake / path.name).write_bytes(SECRET)
    with restored(folder):
        shutil.rmtree(folder)
        os.symlink(fake, folder)
        _refused(client.get(f"/media/{row['item_id']}"))
        # a link on the way to the very file that was ingested: its bytes are still the ingested ones
        os.unlink(folder)
        os.symlink(folder.with_name(folder.name + ".keep"), folder)
        r = client.get(f"/media/{row['item_id']}")
        assert r.status_code == 200 and r.content == (folder / path.name).read_bytes()


def test_a_file_gone_or_turned_into_a_folder(client, built):
    path, row = _item(built, "texts")
    with restored(path):
        os.unlink(path)
        r = client.get(f"/media/{row['item_id']}")
        assert r.status_code == 404 and "no longer" in r.json()["detail"]
        path.mkdir()
        r = client.get(f"/media/{row['item_id']}")
        assert r.status_code == 409 and "regular file" in r.json()["detail"]
        path.rmdir()
        os.mkfifo(path)
        assert client.get(f"/media/{row['item_id']}").status_code == 409  # a pipe: never opened for a read that blocks


def test_a_changed_manifest_caption_is_refused(client, built):
    _, root, items = built
    caption = next(row for uri, row in items.items() if "#row=" in uri)
    manifest = root / "corpus" / "notes.csv"
    with restored(manifest):
        manifest.write_text("id,caption\nn1,the secret plan\n", encoding="utf-8")
        r = client.get(f"/media/{caption['item_id']}")
        assert r.status_code == 409 and "secret plan" not in r.text


def test_range_requests_on_a_checked_audio_file(app, client, built):
    path, row = _item(built, "audio", "long.wav")
    data, url = path.read_bytes(), f"/media/{row['item_id']}"
    size = len(data)
    r = client.get(url, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{size}" and r.headers["content-length"] == "100"
    r = client.get(url, headers={"Range": f"bytes={size - 10}-"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = client.get(url, headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = client.get(url, headers={"Range": f"bytes=0-{size + 1000}"})
    assert r.status_code == 206 and r.content == data and r.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    r = client.get(url, headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
    assert client.get(url, headers={"Range": "bytes=-0"}).status_code == 416
    # several ranges, a malformed one, or an If-Range for other content: the whole file
    for headers in ({"Range": "bytes=0-1,5-6"}, {"Range": "bytes=x-y"}, {"Range": "bytes=0-9", "If-Range": '"old"'}):
        r = client.get(url, headers=headers)
        assert r.status_code == 200 and r.content == data, headers
    r = client.get(url, headers={"Range": "bytes=0-9", "If-Range": f'"{row["content_hash"]}"'})
    assert r.status_code == 206 and r.content == data[:10]
    # an audio player's many requests: the file was hashed once
    for start in range(0, size, size // 20):
        assert client.get(url, headers={"Range": f"bytes={start}-{start + 999}"}).status_code == 206
    assert app.state.media.verifier.hashed == 1
    os.utime(path)  # same bytes, new stat: checked again, still served
    assert client.get(url, headers={"Range": "bytes=0-0"}).status_code == 206
    assert app.state.media.verifier.hashed == 2


def test_a_file_modified_between_two_range_requests(client, built):
    path, row = _item(built, "audio", ".wav")
    url = f"/media/{row['item_id']}"
    data = path.read_bytes()
    assert client.get(url, headers={"Range": "bytes=0-99"}).content == data[:100]
    with restored(path):
        with open(path, "r+b") as fh:
            fh.seek(50)
            fh.write(b"X" * 10)
        r = client.get(url, headers={"Range": "bytes=0-99"})
        assert r.status_code == 409 and b"XXXX" not in r.content
    assert client.get(url, headers={"Range": "bytes=0-99"}).content == data[:100]


def test_a_file_modified_while_it_is_sent_stops_short_with_only_ingested_bytes(built):
    """A real server and a slow reader: once the file changes, no block read after the change is sent."""
    path, row = _item(built, "audio", "long.wav")
    data = path.read_bytes()
    assert len(data) > 10 << 20
    with restored(path), serve(create_app(built[0], token=""), buffer=32 << 10) as port, \
            connect(port, buffer=16 << 10) as s:
        s.sendall(f"GET /media/{row['item_id']} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1024)
        time.sleep(1.0)  # the server fills the buffers and waits for the reader
        with open(path, "r+b") as fh:
            fh.seek(len(data) // 2)
            fh.write(b"\x7f" * 4096)
        body = head.partition(b"\r\n\r\n")[2]
        while part := s.recv(65536):
            body += part
    assert b"200 OK" in head.split(b"\r\n")[0]
    assert 0 < len(body) < len(data) // 2, len(body)
    assert body == data[: len(body)]


def test_head_on_media_sends_headers_only(client, built):
    path, row = _item(built, "audio", ".wav")
    r = client.head(f"/media/{row['item_id']}")
    assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) == path.stat().st_size
    r = client.head(f"/media/{row['item_id']}", headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.headers["content-length"] == "10"


# --------------------------------------------------------------------------- thumbnails


def _noise_jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


def test_one_decode_per_item_whatever_the_size(app, client, built):
    _, row = _item(built, "images", ".jpg")
    _, other = _item(built, "images", ".png")
    sizes = {}
    for size in (64, 100, 320, 1024, 64):
        r = client.get(f"/media/{row['item_id']}", params={"size": size})
        assert r.status_code == 200
        sizes[size] = Image.open(io.BytesIO(r.content)).size
    assert app.state.media.thumbs.decoded == 1
    assert max(sizes[64]) <= 64 and max(sizes[100]) <= 100 and sizes[64] != sizes[320]
    assert client.get(f"/media/{other['item_id']}", params={"size": 50}).status_code == 200
    assert app.state.media.thumbs.decoded == 2


def test_jpeg_thumbnails_decode_at_a_reduced_scale(tmp_path):
    big = tmp_path / "big.jpg"
    _noise_jpeg(big, (4000, 3000), 1)
    img = _decode_reduced(big.read_bytes(), 89_478_485, 1 << 30, 1024)
    assert img.size == (2000, 1500) and img.mode == "RGB"  # 1/2 scale: the smallest still >= 1024 px
    # EXIF orientation still applies (6: rotate 90 degrees)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(big).save(tmp_path / "rot.jpg", exif=exif)
    assert _decode_reduced((tmp_path / "rot.jpg").read_bytes(), 89_478_485, 1 << 30, 1024).size == (1500, 2000)
    with pytest.raises(DecodeError, match="over the 1.0 MP limit"):  # the pixel limit is checked first
        _decode_reduced(big.read_bytes(), 1_000_000, 1 << 30, 1024)


@pytest.mark.parametrize("decodes", [1, 2])
def test_concurrent_image_decodes_are_bounded(tmp_path, tiny_clip_dir, decodes):
    from omnivec.pipeline.run import ingest

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(8):
        _noise_jpeg(corpus / f"n{i}.jpg", (2400, 1800), i)
    settings = make_settings(tmp_path / "store", tiny_clip_dir, batch_size=8)
    assert ingest([str(corpus)], settings).failed == 0
    app = create_app(settings, token="", decodes=decodes)
    client = TestClient(app)
    ids = [r["item_id"] for r in Store(settings.store).read("items").to_pylist()]
    start = threading.Barrier(len(ids))

    def one(item_id: str) -> int:
        start.wait()
        return client.get(f"/media/{item_id}", params={"size": 128}).status_code

    with ThreadPoolExecutor(len(ids)) as pool:
        assert list(pool.map(one, ids)) == [200] * len(ids)
    assert app.state.slots.peak == decodes
    assert app.state.media.thumbs.decoded == len(ids)


def test_a_thumbnail_keeps_the_decoded_bytes_budget(built):
    """``max_image_decoded_bytes`` holds for the service's decodes too, not only for ingest's."""
    settings = built[0].model_copy(update={"max_image_decoded_bytes": 4096})
    client = TestClient(create_app(settings, token=""))
    for suffix in (".png", ".jpg"):
        _, row = _item(built, "images", suffix)
        r = client.get(f"/media/{row['item_id']}?size=64")
        assert r.status_code == 422 and "max_image_decoded_bytes" in r.json()["detail"], r.text
        assert TestClient(create_app(built[0], token="")).get(f"/media/{row['item_id']}?size=64").status_code == 200
