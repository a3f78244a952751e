"""The embedded default benchmark: handwritten vs printed digits, built offline.

- ``handwritten``: the 1,797 real handwritten digits (UCI optical recognition set) that
  scikit-learn ships, 8 x 8 at 17 grey levels, upscaled to 32 x 32 (bicubic), dark ink on white.
- ``printed``: digits rendered from the TrueType fonts bundled with matplotlib (DejaVu, STIX,
  Computer Modern), 200 per class by default, with seeded jitter in position, scale, rotation and
  stroke width, rendered at 4x and reduced to 32 x 32.

Written as ``OUT/<domain>/<digit>/<index>.png``; the bytes depend only on the seed and the
installed scikit-learn/matplotlib/Pillow data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 32
FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf",
)


def _font_paths() -> list[Path]:
    import matplotlib

    base = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    paths = [base / f for f in FONTS if (base / f).exists()]
    if not paths:
        raise FileNotFoundError(f"no bundled fonts found in {base}")
    return paths


def handwritten_images() -> tuple[list[Image.Image], np.ndarray]:
    """scikit-learn's 1,797 handwritten digits as 32 x 32 RGB images, dark ink on white."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = []
    for arr in digits.images:
        grey = (255 - arr / 16.0 * 255).round().astype(np.uint8)
        images.append(Image.fromarray(grey, mode="L").resize((SIZE, SIZE), Image.BICUBIC).convert("RGB"))
    return images, digits.target.astype(np.int64)


def render_digit(digit: int, font_path: Path, rng: np.random.Generator) -> Image.Image:
    """One printed digit with random scale, stroke, rotation and offset. Shape: 32 x 32 RGB."""
    big = SIZE * 4
    size = int(rng.uniform(0.8, 1.1) * big)
    stroke = int(rng.integers(0, 5))
    font = ImageFont.truetype(str(font_path), size)
    canvas = Image.new("L", (big * 2, big * 2), 255)
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = draw.textbbox((0, 0), str(digit), font=font, stroke_width=stroke)
    origin = (big - (x0 + x1) / 2, big - (y0 + y1) / 2)  # glyph's ink box centred on the canvas
    draw.text(origin, str(digit), font=font, fill=0, stroke_width=stroke, stroke_fill=0)
    canvas = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.BICUBIC, fillcolor=255)
    dx, dy = (rng.uniform(-0.12, 0.12, size=2) * big).round().astype(int)
    left, top = big // 2 - dx, big // 2 - dy
    crop = canvas.crop((left, top, left + big, top + big))
    return crop.resize((SIZE, SIZE), Image.LANCZOS).convert("RGB")


def printed_images(per_class: int, seed: int) -> tuple[list[Image.Image], np.ndarray]:
    rng = np.random.default_rng(seed)
    fonts = _font_paths()
    images, labels = [], []
    for digit in range(10):
        for _ in range(per_class):
            images.append(render_digit(digit, fonts[int(rng.integers(len(fonts)))], rng))
            labels.append(digit)
    return images, np.asarray(labels, dtype=np.int64)


def build_digits(out: str | Path, seed: int = 0, per_class: int = 200, overwrite: bool = False) -> Path:
    """Write the two-domain digits benchmark under ``out``; returns ``out``.

    An existing complete build (``out/.complete`` naming the same seed) is kept unless ``overwrite``.
    """
    out = Path(out)
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"digits output {out} exists and is not a folder")
    marker = out / ".complete"
    stamp = f"seed={seed} per_class={per_class}\n"
    if marker.exists() and marker.read_text() == stamp and not overwrite:
        return out
    for domain, (images, labels) in (("handwritten", handwritten_images()), ("printed", printed_images(per_class, seed))):
        for i, (img, label) in enumerate(zip(images, labels)):
            path = out / domain / str(int(label)) / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, format="PNG", optimize=False)
    marker.write_text(stamp)
    return out
