"""Files written whole or not at all, and checkpoints read without running any code.

Every file is written to a temporary file in the same folder and renamed over the old one, so a
kill never leaves half a file. Checkpoints are loaded with ``weights_only=True``: tensors and
plain values, never code.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterator

import torch

from ucdir_core.base.errors import RunError

TEMP_SUFFIX = ".tmp"


def atomic_write_bytes(path: Path, data: bytes, previous: Path | None = None) -> None:
    """Write ``data`` to a temporary file next to ``path`` and rename it over ``path``: never a half file.

    With ``previous``, the file ``path`` held is first renamed to ``previous``. Files are created
    with the user's umask (mode ``0o666 & ~umask``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path, previous: Path | None = None) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue(), previous)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint loaded with ``weights_only=True`` onto the CPU: tensors and plain values, never code.

    Raises:
        FileNotFoundError: no such file.
        RunError: a crafted, truncated or corrupt file (one line naming the file).
    """
    path = _checkpoint_file(path)
    return _load_checkpoint(path, path)


def load_checkpoint_digest(path: str | Path) -> tuple[dict[str, Any], str]:
    """A checkpoint loaded as :func:`load_checkpoint` does, and the digest of the very bytes it was
    loaded from (:func:`bytes_digest`, equal to :func:`file_digest` of the file): the file is read
    once, so the digest names what was loaded even if the file is replaced meanwhile.

    Raises:
        FileNotFoundError: no such file.
        RunError: a crafted, truncated or corrupt file (one line naming the file).
    """
    path = _checkpoint_file(path)
    data = path.read_bytes()
    return _load_checkpoint(io.BytesIO(data), path), bytes_digest(data)


def _checkpoint_file(path: str | Path) -> Path:
    """``path`` as a Path, refused in one line (FileNotFoundError) when it is no file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path}")
    return path


def _load_checkpoint(source: Any, path: Path) -> dict[str, Any]:
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # UnpicklingError, RuntimeError (bad zip), EOFError, KeyError, ...
        raise RunError(f"{path}: not a checkpoint of tensors and plain values, truncated or corrupt; "
                       f"nothing in it was run ({_reason(exc)})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: not a checkpoint (it holds a {type(obj).__name__}, not a dict)")
    return obj


def _reason(exc: BaseException) -> str:
    """The informative line of an exception's message (torch's carry paragraphs of advice)."""
    boiler = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith(boiler)]
    text = lines[0].split(". ")[0] if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def plain(obj: Any) -> Any:
    """``obj`` as plain JSON values (numpy numbers and arrays become Python numbers and lists)."""
    return json.loads(json.dumps(obj, default=json_default))


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented, key-sorted JSON, written atomically."""
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n").encode())


def file_digest(path: str | Path) -> str:
    """BLAKE2b (16 bytes, hex) of a file's bytes, read in 1 MiB blocks.

    Remembered for the life of the process per (path, size, modification time), so that the
    dataset identity and the view cache of one training start read each file once; a file whose
    size or time changed is read again."""
    st = os.stat(path)
    return _digest(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=1 << 18)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bytes_digest(data: bytes) -> str:
    """BLAKE2b (16 bytes, hex) of ``data``: what :func:`file_digest` gives for a file holding them."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A folder written whole or not at all: yields a temporary folder beside ``path`` (hidden:
    ``.NAME.XXXXXXXX.tmp``) to fill; when the block ends without an error, it takes the place of
    ``path`` by renames (an old ``path`` is first renamed aside, then deleted), so a reader finds
    the old folder, the new one, or (for an instant) none, never a half-written one. On an error
    the temporary folder is deleted and ``path`` is left as it was.

    A published folder is never modified in place: a reader that opens it (``os.open`` of the
    folder, then its files relative to that descriptor) reads one version.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.iterdir():  # the files' bytes on disk before the rename makes them visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old{TEMP_SUFFIX}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_temp_folders(parent: str | Path) -> list[Path]:
    """Delete the temporary folders that :func:`atomic_folder` writers killed in ``parent`` left
    behind (call it only while no writer runs: under the run folder's lock)."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    stale = [p for p in parent.iterdir() if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX) and p.is_dir()
             and not p.is_symlink()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def json_default(o: Any) -> Any:
    """``json.dumps``'s ``default``: arrays and tensors as lists, paths as strings."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
