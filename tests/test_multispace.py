"""Several spaces together: the text space (real MiniLM), fusion over spaces, hybrid, filters, assets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assets_of, make_settings, vectors_of
from omnivec.errors import OmnivecError
from omnivec.pipeline.run import ingest
from omnivec.query import search
from omnivec.query_assets import search_assets
from omnivec.store import Store

# 30 sentences on distinct topics, and a paraphrase of each that shares almost no words with it
CORPUS = {
    "volcano": ("Lava poured down the slopes after the volcano erupted.", "molten rock flowing from a mountain"),
    "bakery": ("The baker pulled fresh loaves of bread out of the oven.", "warm bread just baked"),
    "chess": ("She checkmated her opponent with a clever knight move.", "winning a board game of strategy"),
    "surgery": ("The surgeon stitched the incision after the operation.", "a doctor closing a wound in hospital"),
    "tax": ("Citizens must file their income tax returns by April.", "paying money owed to the government"),
    "whale": ("A humpback whale breached near the fishing boat.", "huge sea mammal jumping out of the ocean"),
    "guitar": ("He tuned the strings of his acoustic guitar before the gig.", "preparing a musical instrument"),
    "snow": ("Heavy snowfall closed the mountain pass for a week.", "winter blizzard blocking a road"),
    "coffee": ("The barista steamed milk for a cappuccino.", "making an espresso drink with foam"),
    "rocket": ("The rocket lifted off from the launch pad toward orbit.", "spacecraft launch into space"),
    "garden": ("Tomatoes and beans grew tall in the vegetable garden.", "growing food plants in the backyard"),
    "election": ("Voters lined up at the polls to choose a new mayor.", "people casting ballots"),
    "earthquake": ("The tremor shook buildings and cracked the streets.", "the ground trembling violently"),
    "painting": ("The artist mixed oil colours on her palette.", "someone creating a picture with paint"),
    "soccer": ("The striker scored a goal in the final minute.", "a football match winning kick"),
    "bees": ("Honeybees collected pollen from the blooming flowers.", "insects making honey"),
    "court": ("The judge sentenced the defendant to two years.", "a verdict in a criminal trial"),
    "train": ("The express train departed the station on time.", "railway journey starting"),
    "dentist": ("The dentist filled a cavity in my molar.", "treatment for a tooth"),
    "wedding": ("The couple exchanged rings at their wedding ceremony.", "two people getting married"),
    "stocks": ("Share prices plunged when the market opened.", "investors losing money on the exchange"),
    "camping": ("We pitched our tent beside the lake and lit a fire.", "sleeping outdoors in the wilderness"),
    "vaccine": ("The clinic gave flu shots to elderly patients.", "immunization injections"),
    "desert": ("Camels crossed the dunes under the scorching sun.", "travelling through hot sand"),
    "library": ("She borrowed three novels from the public library.", "checking out books to read"),
    "laundry": ("He folded the clean shirts after the wash cycle.", "doing the washing of clothes"),
    "recipe": ("Whisk the eggs and sugar until the mixture is pale.", "instructions for making a cake batter"),
    "phone": ("My smartphone battery died in the afternoon.", "a mobile device running out of charge"),
    "forest": ("Wolves howled deep in the pine forest at night.", "wild animals calling in the woods"),
    "flight": ("The plane landed smoothly despite the crosswind.", "an aircraft touching down"),
}


@pytest.fixture(scope="module")
def text_store(tmp_path_factory, tiny_clip_dir):
    root = tmp_path_factory.mktemp("topics")
    docs = root / "docs"
    docs.mkdir()
    for name, (sentence, _) in CORPUS.items():
        (docs / f"{name}.txt").write_text(sentence)
    settings = make_settings(root / "store", tiny_clip_dir, text=True)
    settings.spaces["clip"].enabled = False  # only the real model: semantics are under test
    report = ingest([str(docs)], settings)
    assert report.embedded == len(CORPUS)
    return docs, settings


def test_paraphrases_find_their_sentence_in_the_top_3(text_store):
    docs, settings = text_store
    misses = []
    for name, (_, paraphrase) in CORPUS.items():
        top = [Path(h.uri).stem for h in search(paraphrase, k=3, space="text", settings=settings)]
        if name not in top:
            misses.append((paraphrase, top))
    assert not misses, misses


def test_text_space_chunks_long_text_with_offsets(text_store, tmp_path):
    _, settings = text_store
    long = " ".join(f"sentence {i} talks about topic number {i}." for i in range(200))
    (tmp_path / "long.txt").write_text(long)
    s2 = settings.model_copy(update={"store": str(tmp_path / "s")})
    ingest([str(tmp_path / "long.txt")], s2)
    rows = sorted(vectors_of(s2.store, "text").to_pylist(), key=lambda r: r["segment"])
    assert len(rows) > 3
    for r in rows:
        assert long[r["char_start"]:r["char_end"]] == r["text"]
    for a, b in zip(rows, rows[1:], strict=False):
        assert b["char_start"] < a["char_end"]  # overlapping chunks
    assert rows[0]["char_start"] == 0 and rows[-1]["char_end"] == len(long)


def test_hybrid_ranks_exact_keywords(text_store):
    _, settings = text_store
    hits = search("cappuccino", k=3, settings=settings, hybrid=True)
    assert Path(hits[0].uri).stem == "coffee"
    assert hits[0].ranks.get("fts:text") == 1 and "text" in hits[0].ranks


def test_filters_restrict_and_reject_injection(text_store):
    docs, settings = text_store
    hits = search("an animal", k=10, settings=settings, where=["uri=*/w*.txt"])
    assert hits and all(Path(h.uri).name.startswith("w") for h in hits)
    with pytest.raises(OmnivecError):
        search("x", settings=settings, where=["modality=text' OR '1'='1"])
    with pytest.raises(OmnivecError):
        search("x", settings=settings, where=["uri=*' OR 1=1 --"])
    runs = Store(settings.store).read("runs", ["run_name"]).to_pylist()
    assert search("bread", k=1, settings=settings, where=[f"run={runs[0]['run_name']}"])
    assert search("bread", k=5, settings=settings, where=["before=2000-01-01"]) == []


def test_text_query_goes_to_every_text_space_and_is_fused(tmp_path, tiny_clip_dir, tiny_clap_dir):
    root = tmp_path / "docs"
    root.mkdir()
    for name, (sentence, _) in list(CORPUS.items())[:8]:
        (root / f"{name}.txt").write_text(sentence)
    settings = make_settings(tmp_path / "store", tiny_clip_dir, tiny_clap_dir, text=True)
    ingest([str(root)], settings)
    hits = search("warm bread just baked", k=8, settings=settings)
    assert all(set(h.ranks) == {"clip", "clap", "text"} for h in hits)  # every file found by all three
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    top = hits[0]
    assert top.score == pytest.approx(sum(1 / (60 + r) for r in top.ranks.values()))
    only = search("warm bread just baked", k=3, space="text", settings=settings)
    assert set(only[0].ranks) == {"text"} and -1 <= only[0].score <= 1  # one list: cosine


def test_assets_by_stem_and_manifest_with_a_missing_file(tmp_path, tiny_clip_dir, tiny_clap_dir):
    import soundfile as sf

    from fixtures.audio_files import sine
    from fixtures.bad_files import good_jpeg

    root = tmp_path / "a"
    root.mkdir()
    (root / "dog.jpg").write_bytes(good_jpeg((120, 80, 40)))
    (root / "dog.txt").write_text("a brown dog")
    sf.write(root / "dog.wav", sine(2, 16000), 16000)
    (root / "lonely.txt").write_text("no partner")
    (root / "photos").mkdir()
    (root / "photos" / "cat.jpg").write_bytes(good_jpeg((10, 10, 10)))
    (root / "set.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"id": "cat", "image": "photos/cat.jpg", "caption": "a black cat"},
        {"id": "ghost", "image": "photos/missing.jpg", "audio": "dog.wav", "caption": "a ghost"},
    ]) + "\n")
    settings = make_settings(tmp_path / "store", tiny_clip_dir, tiny_clap_dir)
    report = ingest([str(root)], settings)
    store = Store(settings.store)
    assets = {r["key"]: r for r in store.read("assets").to_pylist()}
    assert set(assets) == {str(root / "dog"), f"{root / 'set.jsonl'}#cat", f"{root / 'set.jsonl'}#ghost"}
    assert sorted(assets[str(root / "dog")]["member_modalities"]) == ["audio", "image", "text"]
    ghost = assets[f"{root / 'set.jsonl'}#ghost"]
    assert sorted(ghost["member_modalities"]) == ["audio", "text"]  # the rest of the asset is kept
    errors = {r["uri"]: r for r in store.read("errors").to_pylist()}
    assert "does not exist" in errors[str(root / "photos" / "missing.jpg")]["message"]
    assert report.failed == 1
    caption_uri = f"{root / 'set.jsonl'}#row=0&col=caption"
    assert caption_uri in {r["uri"] for r in vectors_of(store, "clip").to_pylist()}  # captions are items

    import numpy as np

    clip = {r["uri"]: np.asarray(r["vector"]) for r in vectors_of(store, "clip").to_pylist()}
    dog = next(r for r in assets_of(store, "clip").to_pylist() if r["key"] == str(root / "dog"))
    expected = clip[str(root / "dog.jpg")] + clip[str(root / "dog.txt")]  # audio is not in clip
    expected /= np.linalg.norm(expected)
    assert dog["members_used"] == 2 and np.allclose(dog["vector"], expected, atol=1e-6)

    hits = search_assets(audio=root / "dog.wav", k=3, settings=settings)
    assert hits[0].space == "clap" and {m["modality"] for m in hits[0].members} >= {"audio"}
    both = search_assets("a brown dog", k=3, settings=settings)
    assert all(set(h.ranks) <= {"clip", "clap"} for h in both) and len(both) == 3

    (root / "dog.txt").unlink()  # the stem group shrinks, the asset stays (image + audio)
    (root / "set.jsonl").write_text(json.dumps({"id": "cat", "image": "photos/cat.jpg"}) + "\n")
    ingest([str(root)], settings)
    keys = {r["key"] for r in store.read("assets").to_pylist()}
    assert keys == {str(root / "dog"), f"{root / 'set.jsonl'}#cat"}
    assert {r["key"] for r in assets_of(store, "clip").to_pylist()} <= keys


def test_python_api_and_cli_search_never_import_prefect(text_store):
    """`omnivec.search` and the CLI module (search/status/errors) answer without loading Prefect."""
    import subprocess
    import sys

    _, settings = text_store
    code = (
        "import sys, omnivec, flows.cli\n"
        f"s = omnivec.load_settings(env={{}}, overrides={{'store': {settings.store!r}, "
        "'spaces': {'clip': {'enabled': False}, 'clap': {'enabled': False}}})\n"
        "hits = omnivec.search('warm bread just baked', k=3, settings=s)\n"
        "assert hits[0].uri.endswith('bakery.txt'), hits\n"
        "assert omnivec.Store(s.store).count('items') == 30\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'prefect'], 'prefect imported'\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_cli_hybrid_where_and_assets_json(text_store, tmp_path, tiny_clip_dir, tiny_clap_dir):
    import os
    import subprocess
    import sys

    docs, settings = text_store
    env = {**os.environ, "OMNIVEC_SPACES__CLIP__ENABLED": "false", "OMNIVEC_SPACES__CLAP__ENABLED": "false"}
    cli = [sys.executable, "-m", "flows.cli", "search"]
    res = subprocess.run([*cli, "cappuccino", "--hybrid", "--where", "uri=*/co*", "--json", "--store",
                          settings.store], capture_output=True, text=True, env=env, timeout=300)
    hits = json.loads(res.stdout)
    assert hits and Path(hits[0]["uri"]).name == "coffee.txt" and "fts:text" in hits[0]["ranks"]
    assert all(Path(h["uri"]).name.startswith("co") for h in hits)
    res = subprocess.run([*cli, "x", "--where", "uri=*' OR 1=1 --", "--store", settings.store],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "uri" in res.stderr
    res = subprocess.run([*cli, "coffee", "--assets", "--store", settings.store], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 2 and "asset" in res.stderr  # this store has no assets: a clear message
