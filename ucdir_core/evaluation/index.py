"""A gallery index: the embeddings of a gallery of images in the field's formats, searched by cosine
similarity, with what it was built from so that a stale one is never used.

One index is one folder (``RUN/index/<name>/``), written whole or not at all
(:func:`~ucdir_core.base.io.atomic_folder`) and never modified in place:

- ``embeddings.npy``: float32 ``(N, dim)``, unit rows; row ``i`` embeds ``meta["files"][i]``.
- ``index.faiss``: those rows in faiss's own format (``faiss.write_index``; read back with
  ``faiss.read_index``), searched by inner product, which is the cosine on unit rows: exact
  (``IndexFlatIP``) below :data:`HNSW_FROM` rows, approximate (``IndexHNSWFlat``, inner product)
  from there on, where it pays (``benchmarks/retrieval_cli.py`` measures both).
- ``meta.json``: ``format``, ``name``, ``kind`` (``domain``: a run's evaluated images of one
  domain; ``folder``: any folder of images), ``source`` (the domain, or the folder), ``root``
  (what ``files`` are relative to), ``checkpoint`` (``file``, its ``epoch``, ``digest``: BLAKE2b of
  its bytes), ``files`` (``[relative path, bytes, mtime_ns, digest]`` per row, as in
  ``dataset.json``), ``domains`` (the domain of each row), ``skipped`` (files of a folder that are
  no readable image), ``dim``, ``count``, ``faiss`` (which index, with its settings) and
  ``alignment`` (``null``: the embeddings are the key encoder's, uncorrected; otherwise the run's
  alignment stage that corrected them, ``{"alignment", "file", "digest", "as"}``, ``as`` naming the
  run's domain whose correction the rows got).

Freshness (:func:`stale_reason`): an index answers for a checkpoint only if it was built from the
very bytes of that checkpoint file, with the same alignment stage (its file's bytes, or none), and
every gallery file it lists is still there with the same
size and bytes (a file whose modification time changed is hashed again; a copy with new times is
the same file). Images added to a gallery folder after it was indexed are not seen until the index
is built again.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np

from ucdir_core.base.errors import RunError
from ucdir_core.base.io import atomic_folder, file_digest
from ucdir_core.data.identity import file_entries

#: the folder of a run that holds its indexes, one sub-folder each
INDEX_FOLDER = "index"
EMBEDDINGS = "embeddings.npy"
FAISS_FILE = "index.faiss"
META = "meta.json"
#: the format of ``meta.json`` this version writes; an index of another format is stale
FORMAT = 1
#: galleries of this many rows or more get an HNSW index; smaller ones exact search. Measured on 2
#: busy CPU cores (``python -m benchmarks.retrieval_cli``, clustered synthetic 128-d unit rows):
#: reading the index and searching 100 queries takes 356 ms exact and 73 ms with HNSW at 50,000
#: rows (208 and 64 ms at 32,000; 54 and 40 ms at 16,000), recall@10 against exact search 1.000
#: with the settings below. A single query gains nothing at any size: reading the file dominates,
#: and HNSW's is about 1.5 times the flat one.
HNSW_FROM = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128


def unit_rows(x: Any) -> np.ndarray:
    """``x`` as a C-contiguous float32 array with each row scaled to unit length.

    Shape:
        (N, dim) -> (N, dim).

    Raises:
        ValueError: not two-dimensional, a non-finite value, or a row of zeros.
    """
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, dim), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings hold a non-finite value")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("embeddings hold a row of zeros")
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def build_faiss(embeddings: np.ndarray, hnsw_from: int | None = None) -> faiss.Index:
    """A faiss index of unit ``embeddings`` searched by inner product (the cosine): exact
    ``IndexFlatIP`` below ``hnsw_from`` rows (default :data:`HNSW_FROM`), ``IndexHNSWFlat`` (M
    :data:`HNSW_M`, efConstruction :data:`HNSW_EF_CONSTRUCTION`, efSearch :data:`HNSW_EF_SEARCH`,
    inner product) from there on.

    Shape:
        embeddings: (N, dim) float32, unit rows.
    """
    n, dim = embeddings.shape
    if n >= (HNSW_FROM if hnsw_from is None else hnsw_from):
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        index = faiss.IndexFlatIP(dim)
    index.add(embeddings)
    return index


def describe(index: faiss.Index) -> str:
    """Which faiss index ``index`` is, with its settings: ``IndexFlatIP`` or
    ``IndexHNSWFlat(M=32, efConstruction=80, efSearch=128)``."""
    if isinstance(index, faiss.IndexHNSWFlat):
        h = index.hnsw
        return f"IndexHNSWFlat(M={h.nb_neighbors(1)}, efConstruction={h.efConstruction}, efSearch={h.efSearch})"
    return type(index).__name__


@dataclass
class GalleryIndex:
    """An index read back (or built in memory): its ``meta.json``, its faiss index, the folder its
    files' relative paths are relative to, and (when read or built with them) its embeddings."""

    meta: dict[str, Any]
    index: faiss.Index
    root: Path
    embeddings: np.ndarray | None = None

    @property
    def paths(self) -> list[str]:
        """Row ``i``'s file, ``root`` joined to its relative path (as a run's file lists give it)."""
        return [str(self.root / e[0]) for e in self.meta["files"]]

    @property
    def domains(self) -> list[str]:
        return list(self.meta["domains"])

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """The ``k`` rows closest to each query by cosine, best first: ``[[(row, score), ...], ...]``
        (fewer than ``k`` when the gallery holds fewer rows).

        Shape:
            queries: (Q, dim) float32 unit rows.
        """
        k = min(k, self.index.ntotal)
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return [[(int(i), float(s)) for s, i in zip(srow, irow) if i >= 0] for srow, irow in zip(scores, rows)]


def gallery_meta(name: str, kind: str, source: str, root: str | Path, paths: Sequence[str], domains: Sequence[str],
                 dim: int, checkpoint: dict[str, Any], skipped: Sequence[str] = (),
                 alignment: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``meta.json`` of an index of ``paths`` (one row each, in order), hashing every file
    (:func:`~ucdir_core.data.identity.file_entries`; a file hashed before in this process is not
    read again).

    Args:
        checkpoint: ``{"file": "last.pt", "epoch": 4, "digest": ...}``, the checkpoint whose key
            encoder made the embeddings.
        alignment: the alignment stage that corrected them, ``{"alignment", "file", "digest", "as"}``
            (None: uncorrected).

    Raises:
        FileNotFoundError: a file that is gone.
    """
    root = Path(root)
    return {"format": FORMAT, "name": name, "kind": kind, "source": source, "root": str(root),
            "checkpoint": dict(checkpoint), "files": file_entries(list(paths), root), "domains": list(domains),
            "skipped": [_relative(p, root) for p in skipped], "dim": int(dim), "count": len(paths),
            "alignment": dict(alignment) if alignment else None, "created": time.time()}


def _relative(path: str | Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def in_memory(meta: dict[str, Any], embeddings: Any, root: str | Path) -> GalleryIndex:
    """An index of ``embeddings`` (made unit rows) that is not written anywhere (``meta`` gets the
    faiss index's description)."""
    emb = unit_rows(embeddings)
    if emb.shape[0] != len(meta["files"]):
        raise ValueError(f"{emb.shape[0]} embeddings for {len(meta['files'])} files")
    index = build_faiss(emb)
    return GalleryIndex({**meta, "faiss": describe(index)}, index, Path(root), emb)


def write_index(folder: str | Path, meta: dict[str, Any], embeddings: Any) -> GalleryIndex:
    """Write an index of ``embeddings`` (made unit rows) into ``folder`` whole
    (:func:`~ucdir_core.base.io.atomic_folder`): ``embeddings.npy``, ``index.faiss``, ``meta.json``.
    A reader finds the old index, the new one, or (for an instant) none; never half of one.

    Shape:
        embeddings: (N, dim), row ``i`` for ``meta["files"][i]``.

    Raises:
        ValueError: embeddings that are not finite, or not one row per file.
        OSError: the folder cannot be written.
    """
    built = in_memory(meta, embeddings, meta["root"])
    with atomic_folder(folder) as tmp:
        np.save(tmp / EMBEDDINGS, built.embeddings, allow_pickle=False)
        faiss.write_index(built.index, str(tmp / FAISS_FILE))
        (tmp / META).write_text(meta_text(built.meta))
    return built


def meta_text(meta: dict[str, Any]) -> str:
    """``meta.json``'s text: one top-level key per line, each list entry on a line of its own."""
    def value(v: Any) -> str:
        if isinstance(v, list) and v:
            return "[\n  " + ",\n  ".join(json.dumps(e, ensure_ascii=False) for e in v) + "\n ]"
        return json.dumps(v, ensure_ascii=False)

    return "{\n" + ",\n".join(f" {json.dumps(k)}: {value(v)}" for k, v in meta.items()) + "\n}\n"


def _read_at(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def read_index(folder: str | Path, root: str | Path | None = None, embeddings: bool = False) -> GalleryIndex:
    """The index in ``folder``: its meta, its faiss index (and with ``embeddings``, its rows), all
    read through one descriptor of the folder, so from one version even while a writer replaces it.

    Args:
        root: what the files' relative paths are relative to (default: the ``root`` it was built with).

    Raises:
        FileNotFoundError: no index there.
        RunError: an index that does not read back (one line naming the folder).
    """
    folder = Path(folder)
    try:
        dir_fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except NotADirectoryError:
        raise RunError(f"{folder}: not an index folder") from None
    try:
        meta = json.loads(_read_at(dir_fd, META))
        index = faiss.deserialize_index(np.frombuffer(_read_at(dir_fd, FAISS_FILE), dtype=np.uint8))
        emb = np.load(io.BytesIO(_read_at(dir_fd, EMBEDDINGS)), allow_pickle=False) if embeddings else None
    except FileNotFoundError:
        raise FileNotFoundError(f"no index at {folder}") from None
    except (ValueError, RuntimeError, TypeError) as exc:  # JSON, faiss's reader, numpy's
        raise RunError(f"{folder}: not a readable index ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                       ) from None
    finally:
        os.close(dir_fd)
    if not isinstance(meta, dict) or index.ntotal != len(meta.get("files", ())) or index.d != meta.get("dim") or (
            emb is not None and emb.shape != (index.ntotal, index.d)):
        raise RunError(f"{folder}: not a readable index (its files do not agree)")
    return GalleryIndex(meta, index, Path(meta["root"] if root is None else root), emb)


def stale_reason(meta: dict[str, Any], checkpoint_digest: str, root: str | Path,
                 alignment_digest: str | None = None) -> str | None:
    """Why an index no longer answers for the checkpoint whose bytes have ``checkpoint_digest``
    and the alignment stage whose file has ``alignment_digest`` (None: no alignment) (None: it
    does): another format, another checkpoint, another alignment, or a gallery file gone or
    changed. Reads no file whose size and modification time are as recorded; hashes one whose
    time changed.

    Example: ``"it was made from another last.pt (epoch 3)"``, ``"photo/dog/001.jpg changed"``.
    """
    if meta.get("format") != FORMAT:
        return f"it has format {meta.get('format')!r}, this version reads {FORMAT}"
    ck = meta.get("checkpoint", {})
    if ck.get("digest") != checkpoint_digest:
        return f"it was made from another {ck.get('file', 'checkpoint')} (epoch {ck.get('epoch')})"
    made = (meta.get("alignment") or {}).get("digest")
    if made != alignment_digest:
        return ("it was made without the run's alignment stage" if made is None else
                "it was made with another alignment stage" if alignment_digest else
                "it was made with an alignment stage that is not used now")
    base = os.fspath(root)
    for rel, size, mtime_ns, digest in meta["files"]:
        path = os.path.join(base, rel)  # strings, not Paths: a stat per file is the whole cost
        try:
            st = os.stat(path)
        except OSError:
            return f"{rel} is gone"
        if st.st_size != size or (st.st_mtime_ns != mtime_ns and file_digest(path) != digest):
            return f"{rel} changed"
    return None


def index_name(base: str, which: str = "last") -> str:
    """The default name of the index of ``base`` (a domain, or a gallery folder's name) made with
    checkpoint ``which``: ``base`` for ``last``, ``base@best`` for ``best``."""
    return base if which == "last" else f"{base}@{which}"


def write_domain_indexes(run_dir: str | Path, domains: Sequence[str], embeddings: Sequence[Any],
                         paths: Sequence[Sequence[str]], root: str | Path, checkpoint: dict[str, Any],
                         which: str = "last", alignment: dict[str, Any] | None = None) -> list[GalleryIndex]:
    """One index per domain of a run (``RUN/index/<domain>/``, ``<domain>@best`` for ``best``): its
    evaluated images ``paths[i]`` (relative to the dataset ``root``) and their ``embeddings[i]`` by
    the key encoder of ``checkpoint`` (corrected by the alignment stage ``alignment`` names, when
    given, each by its own domain's correction). The caller holds the run folder's lock.

    Shape:
        embeddings[i]: (len(paths[i]), dim).
    """
    out = []
    for domain, emb, files in zip(domains, embeddings, paths):
        emb = np.asarray(emb, dtype=np.float32)
        name = index_name(domain, which)
        meta = gallery_meta(name, "domain", domain, root, files, [domain] * len(files), emb.shape[1], checkpoint,
                            alignment={**alignment, "as": domain} if alignment else None)
        out.append(write_index(Path(run_dir) / INDEX_FOLDER / name, meta, emb))
    return out
