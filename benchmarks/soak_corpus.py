"""The crash soak's corpus: version 1 (good, bad and odd files of every modality) and the changes that
make version 2 (deletions, edits, additions, a bad file fixed, a good one broken, a touched file).
Used by ``benchmarks/crash_soak.py``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

LONG_TEXT = ("The river bends around the old mill, where the wheel still turns in spring. "
             "Children fish from the stone bridge and herons wait in the reeds. ") * 12


def build_corpus(root: Path, notes: int = 60, audio: bool = True) -> Path:
    """Version 1 of the soak corpus: the sample corpus (shape images, texts, sounds), the bad-file
    corpus (empty, truncated, random, mislabelled, latin-1, bomb), ``notes`` short notes, two long
    texts (several chunks each), assets by stem, and a dangling link (a discovery error)."""
    from omnivec.sample import build_sample_corpus, tone, write_sample_audio
    from tests.fixtures.bad_files import good_jpeg, write_bad_corpus

    build_sample_corpus(root, audio=False)
    if audio:
        audio_dir = root / "audio"
        write_sample_audio(audio_dir)
        for f in audio_dir.iterdir():  # keep the soak quick: the 12 s file and speech are left out
            if f.name.startswith(("tone-then-noise", "speech")):
                f.unlink()
    write_bad_corpus(root / "bad")
    (root / "notes").mkdir(exist_ok=True)
    for i in range(notes):
        (root / "notes" / f"note-{i:03d}.txt").write_text(f"note {i}: about topic {i % 11}, item {i * 7 % 13}")
    (root / "long").mkdir(exist_ok=True)
    (root / "long" / "river.txt").write_text(LONG_TEXT)
    (root / "long" / "mill.txt").write_text(LONG_TEXT.replace("river", "canal") + " The end.")
    pairs = root / "pairs"
    pairs.mkdir(exist_ok=True)
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]):
        (pairs / f"pair-{i}.jpg").write_bytes(good_jpeg(colour))
        (pairs / f"pair-{i}.txt").write_text(f"the caption of pair {i}")
    if audio:
        import soundfile as sf

        sf.write(pairs / "pair-0.wav", tone(330, 2), 22050)
    os.symlink(root / "nowhere.jpg", root / "dangling.jpg")
    return root


def mutate_corpus(root: Path) -> list[str]:
    """Version 2: deletions, content changes, additions, a bad file fixed, a good file broken, a
    touched file (new mtime, same bytes), an asset losing a member. Returns what changed."""
    from tests.fixtures.bad_files import good_jpeg

    later = time.time() + 5
    done: list[str] = []

    def stamp(p: Path) -> None:
        os.utime(p, (later, later))

    for rel in ("texts/dogs.txt", "notes/note-003.txt", "notes/note-004.txt", "pairs/pair-1.txt",
                "audio/noise.flac"):
        p = root / rel
        if p.exists():
            p.unlink()
            done.append(f"deleted {rel}")
    for rel, text in (("texts/ocean.txt", "Storm waves break on the harbour wall all night long."),
                      ("notes/note-010.txt", "note 10, rewritten: " + LONG_TEXT[:400]),
                      ("long/mill.txt", LONG_TEXT[:300])):
        (root / rel).write_text(text)
        stamp(root / rel)
        done.append(f"changed {rel}")
    img = next(p for p in sorted((root / "images").iterdir()) if p.name.startswith("blue-"))
    img.write_bytes(good_jpeg((10, 120, 240))) if img.suffix == ".jpg" else _png(img)
    stamp(img)
    done.append(f"changed images/{img.name}")
    for i in range(3):
        (root / "notes" / f"added-{i}.txt").write_text(f"a note added later, number {i}")
        done.append(f"added notes/added-{i}.txt")
    (root / "images" / "added.jpg").write_bytes(good_jpeg((90, 90, 90)))
    (root / "bad" / "latin1.txt").write_text("café au lait, now in UTF-8", encoding="utf-8")
    stamp(root / "bad" / "latin1.txt")
    done.append("fixed bad/latin1.txt")
    good = root / "bad" / "good.png"
    good.write_bytes(good.read_bytes()[:40])
    stamp(good)
    done.append("broke bad/good.png")
    stamp(root / "texts" / "cooking.txt")
    done.append("touched texts/cooking.txt")
    return done


def _png(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (50, 30), (10, 120, 240)).save(path, "PNG")
