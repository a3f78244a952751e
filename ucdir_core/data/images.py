"""Image decoding and the spec's training and evaluation transforms."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from ucdir_core.base.errors import DataError
from ucdir_core.base.text import escape_controls, printable, worker_message

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def is_image_name(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: EXIF orientation applied; grayscale, palette, RGBA (composited on
    white), CMYK and 16/32-bit integer or float images converted."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if img.mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        img = Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def open_image(path: str | Path) -> Image.Image:
    """``Image.open`` that refuses a decompression bomb: more pixels than ``Image.MAX_IMAGE_PIXELS``
    raises ``Image.DecompressionBombError`` (Pillow only warns below twice that limit)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombWarning as exc:
            raise Image.DecompressionBombError(str(exc)) from None


class ImageDecodeError(DataError):
    """A file that the one decode path (:func:`load_image`) cannot turn into an RGB image.

    ``kind`` is ``too_large`` (a decompression bomb), ``truncated`` or ``unreadable`` (anything
    else the decoder, the EXIF orientation or the conversion raised); the message is one line
    naming the file (control characters escaped) and the decoder's reason.

    Built with one argument, that is the message: torch re-raises an error of a DataLoader worker
    process in the main process as ``type(error)(message)``, and the message it gives is reduced
    to the worker's one line (:func:`~ucdir_core.base.text.worker_message`); ``path`` and
    ``reason`` are then None, ``kind`` is ``unreadable``.
    """

    def __init__(self, path: str | Path, kind: str | None = None, reason: str | None = None):
        if kind is None:  # the message alone: a re-raise from a DataLoader worker
            super().__init__(worker_message(str(path)))
            self.path, self.kind, self.reason = None, "unreadable", None
            return
        super().__init__(f"{printable(path)}: not a readable image ({escape_controls(reason)})")
        self.path, self.kind, self.reason = str(path), kind, reason


class ImageMissingError(DataError, FileNotFoundError):
    """An image file that is not there (any more): removed, renamed or moved after the dataset was
    scanned. The message is one line naming the file (control characters escaped) and what to do.
    A :class:`FileNotFoundError` as well, for callers that catch that.

    Built with ``path=``; built with one message (torch's re-raise of an error of a DataLoader
    worker process), that message is reduced to the worker's one line, and ``path`` is None.
    """

    def __init__(self, message: str | None = None, *, path: str | Path | None = None):
        if path is not None:
            message = (f"{printable(path)}: image file not found (removed or moved while in use); put it back and run "
                       "again (`ucdir train --resume` continues a run), or train anew without it (--overwrite)")
        super().__init__(worker_message(str(message)))
        self.path = None if path is None else str(path)


def load_image(path: str | Path) -> Image.Image:
    """Decode ``path`` fully, apply its EXIF orientation and return it as 8-bit RGB: the one
    decode path of the data check, training, evaluation and retrieval.

    Both errors name the file in their message, in a DataLoader worker process as well (torch
    re-raises them in the main process with the same type and message).

    Raises:
        ImageMissingError: no such file (a :class:`FileNotFoundError`).
        ImageDecodeError: whatever else goes wrong while decoding, orienting or converting the
            file (truncated data, a malformed EXIF block, an unknown format, a decompression bomb).
    """
    try:
        with open_image(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise ImageMissingError(path=path) from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(path, "too_large", _first_line(exc)) from None
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(path, "unreadable", _first_line(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure makes the file a broken file
        text = _first_line(exc)
        kind = "truncated" if "truncat" in text.lower() or "broken data" in text.lower() else "unreadable"
        raise ImageDecodeError(path, kind, text) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class PILGaussianBlur:
    """Gaussian blur with a random sigma in ``sigma`` (MoCo v2's augmentation)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def train_transform(size: int, mean, std):
    """Spec section 3 training view: RandomResizedCrop(size, 0.2-1), ColorJitter(0.4, 0.4, 0.4,
    0.1) p 0.8, RandomGrayscale p 0.2, GaussianBlur sigma 0.1-2 p 0.5, flip, normalisation."""
    from torchvision import transforms as T

    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([PILGaussianBlur((0.1, 2.0))], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def eval_transform(size: int, resize: int, mean, std):
    """Spec section 3 evaluation view: Resize(resize), CenterCrop(size), normalisation."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
