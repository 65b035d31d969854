"""A small generated corpus: coloured shapes as images, short descriptions as text files."""

from __future__ import annotations

from pathlib import Path

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


def build_sample_corpus(folder: str | Path) -> Path:
    """Write 18 JPEG/PNG shape images and 6 text files under ``folder``; returns it."""
    root = Path(folder)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "texts").mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(COLOURS):
        for j, shape in enumerate(SHAPES):
            ext = "png" if (i + j) % 3 == 0 else "jpg"
            draw_shape(colour, shape).save(root / "images" / f"{colour}-{shape}.{ext}")
    for name, text in TEXTS.items():
        (root / "texts" / name).write_text(text + "\n", encoding="utf-8")
    return root
