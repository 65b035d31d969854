"""A small generated corpus: coloured shapes as images, short texts, tones, noise and chirps."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 220),
           "yellow": (240, 210, 20), "purple": (140, 40, 170), "orange": (250, 140, 20)}
SHAPES = ("circle", "square", "triangle")

TEXTS = {
    "dogs.txt": "Dogs are loyal companions. A dog barks at the mail carrier and fetches a ball in the park.",
    "astronomy.md": "# The night sky\n\nThe Moon orbits the Earth, and the planets circle the Sun.",
    "cooking.txt": "To bake bread, knead flour, water, salt and yeast, let the dough rise, then bake it.",
    "ocean.txt": "Waves roll onto the sandy beach while gulls fly over the blue ocean.",
    "trains.md": "A steam locomotive pulls its carriages along the railway through the mountains.",
    "football.txt": "The striker kicked the ball past the goalkeeper and the crowd cheered the goal.",
}


def draw_shape(colour: str, shape: str, size: int = 224) -> Image.Image:
    img = Image.new("RGB", (size, size), (250, 250, 250))
    d = ImageDraw.Draw(img)
    m = size // 6
    box = (m, m, size - m, size - m)
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=fill)
    return img


AUDIO_RATE = 22050


def tone(freq: float, seconds: float, rate: int = AUDIO_RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp(f0: float, f1: float, seconds: float, rate: int = AUDIO_RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (0.4 * np.sin(phase)).astype(np.float32)


def noise(seconds: float, rate: int = AUDIO_RATE, seed: int = 0) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def write_sample_audio(folder: Path) -> list[Path]:
    """Tones (wav), noise (flac), a chirp (ogg), a 12 s two-window file, and speech if espeak-ng exists."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "tone-440hz.wav": tone(440, 4), "tone-1000hz.wav": tone(1000, 3), "noise.flac": noise(5),
        "chirp.ogg": chirp(200, 4000, 6), "tone-then-noise.wav": np.concatenate([tone(440, 6), noise(6)]),
    }
    out = []
    for name, data in files.items():
        sf.write(folder / name, data, AUDIO_RATE)
        out.append(folder / name)
    espeak = shutil.which("espeak-ng")
    if espeak:
        target = folder / "speech-hello.wav"
        done = subprocess.run([espeak, "-w", str(target), "hello, this is a short spoken sentence"],
                              capture_output=True, timeout=60)
        if done.returncode == 0:
            out.append(target)
    return out


def build_sample_corpus(folder: str | Path, audio: bool = True) -> Path:
    """Write 18 JPEG/PNG shape images, 6 text files and (``audio``) 5-6 sound files under ``folder``."""
    root = Path(folder)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "texts").mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(COLOURS):
        for j, shape in enumerate(SHAPES):
            ext = "png" if (i + j) % 3 == 0 else "jpg"
            draw_shape(colour, shape).save(root / "images" / f"{colour}-{shape}.{ext}")
    for name, text in TEXTS.items():
        (root / "texts" / name).write_text(text + "\n", encoding="utf-8")
    if audio:
        write_sample_audio(root / "audio")
    return root
