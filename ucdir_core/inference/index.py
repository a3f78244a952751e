"""A run's gallery indexes (``ucdir index``) and their export for use without this package.

By default a run has one index per domain, its evaluated images, written at the end of training
and by ``ucdir index RUN`` (``RUN/index/<domain>/``; ``<domain>@best`` with ``--which best``):
a query of one domain searches the other's, as ``ucdir retrieve`` does. ``ucdir index RUN
--gallery DIR`` indexes any folder of images (``RUN/index/<DIR's name>/``, or ``--name``). The
format and the freshness rule: :mod:`ucdir_core.evaluation.index`. Building takes the run folder's
lock (one writer at a time); an index already fresh is left alone, and nothing is written then.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ucdir_core.base.errors import DataError
from ucdir_core.base.io import atomic_write_bytes, file_digest, remove_temp_folders
from ucdir_core.base.text import printable
from ucdir_core.data.locations import resolve_root
from ucdir_core.evaluation.index import (INDEX_FOLDER, GalleryIndex, gallery_meta, index_name, read_index,
                                         stale_reason, write_domain_indexes, write_index)
from ucdir_core.inference.query import checkpoint_path, image_files, load_query_model, run_alignment_model
from ucdir_core.training import runs

#: the files of an export (``ucdir index RUN --export DIR``)
EXPORT_EMBEDDINGS = "embeddings.npy"
EXPORT_ITEMS = "items.json"


def index_folder(run_dir: str | Path, name: str) -> Path:
    """Where the index ``name`` of a run lives: ``RUN/index/<name>/``."""
    return Path(run_dir) / INDEX_FOLDER / name


def check_name(name: str) -> str:
    """``name`` if it can name an index folder (one path component, not hidden).

    Raises:
        ValueError: an empty name, one with ``/`` or a NUL, or one starting with ``.``.
    """
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise ValueError("an index name is one folder name, not empty and not starting with '.', got "
                         f"{printable(name)}")
    return name


def fresh_index(run_dir: str | Path, name: str, checkpoint_digest: str, dataset_root: str | Path,
                embeddings: bool = False, alignment_digest: str | None = None) -> tuple[GalleryIndex | None, str]:
    """The run's index ``name`` if it answers for the checkpoint with ``checkpoint_digest`` and the
    alignment stage with ``alignment_digest`` (None: none)
    (:func:`~ucdir_core.evaluation.index.stale_reason`), and otherwise None and why not (``"there is
    none"``, ``"it was made from another last.pt (epoch 3)"``, ``"A/cat/1.png changed"``, ...). A
    domain's index is read relative to ``dataset_root`` (the run's dataset, where it is now); a
    folder's, relative to that folder."""
    try:
        g = read_index(index_folder(run_dir, name), embeddings=embeddings)
    except FileNotFoundError:
        return None, "there is none"
    except (DataError, OSError) as exc:  # RunError: unreadable
        return None, str(exc)
    if g.meta.get("kind") == "domain":
        g.root = Path(dataset_root)
    reason = stale_reason(g.meta, checkpoint_digest, g.root, alignment_digest)
    return (g, "") if reason is None else (None, reason)


@dataclass
class IndexResult:
    """One index of ``ucdir index``: its folder, the index, and whether it was built now (False:
    it was fresh and left alone)."""

    folder: Path
    index: GalleryIndex
    built: bool

    def line(self) -> str:
        """One line for the terminal: where, how many images of what, which checkpoint, which faiss index."""
        m = self.index.meta
        ck = m["checkpoint"]
        what = (f"{m['count']} images of {printable(m['source'])}, {ck['file']} (epoch {ck['epoch']}), {m['faiss']}"
                + (f", {len(m['skipped'])} unreadable files skipped" if m.get("skipped") else "")
                + (f", aligned by the run's {m['alignment']['alignment']} stage as {m['alignment']['as']}"
                   if m.get("alignment") else ""))
        return f"{printable(self.folder)}: {'written' if self.built else 'up to date'} ({what})"


def index_run(run_dir: str | Path, which: str = "last", gallery: str | Path | None = None, name: str | None = None,
              progress: bool = False, log: Callable[[str], None] = print) -> list[IndexResult]:
    """Bring a run's indexes up to date: by default one per domain (its evaluated images), or one
    of the image folder ``gallery`` (named ``name``, by default after the folder), embedded by the
    key encoder of checkpoint ``which``. An index that is fresh (same checkpoint bytes, same gallery
    files) is left alone; if all are, nothing is written and no lock is taken. Otherwise the run
    folder is locked, a killed writer's temporary folders removed, and each stale one written whole.

    Raises:
        FileNotFoundError: no run, checkpoint or gallery folder.
        RunError: the run is in use by another process (its lock), a checkpoint that does not load,
            or the run's dataset changed since it was trained.
        DataError: a gallery folder without a readable image.
        ValueError: a bad ``name``, or ``name`` without ``gallery``.
    """
    run = runs.RunFolder(run_dir)
    cfg = run.config()
    path = checkpoint_path(run, which)
    root = resolve_root(cfg)
    if gallery is None:
        if name is not None:
            raise ValueError("--name names the index of a --gallery folder; the run's own indexes are named after "
                             "their domains")
        targets = [index_name(d, which) for d in cfg.domains]
        files: list[Path] = []
    else:
        folder = Path(gallery)
        if not folder.is_dir():
            raise FileNotFoundError(f"gallery folder not found: {printable(gallery)}")
        folder = folder.resolve()
        name = check_name(name if name is not None else index_name(folder.name, which))
        taken = {index_name(d, w): d for d in cfg.domains for w in ("last", "best")}
        if name in taken:
            raise ValueError(f"index name {printable(name)} is that of domain {printable(taken[name])}'s index; pass "
                             "--name NAME")
        files = image_files(folder)
        if not files:
            raise DataError(f"gallery folder {printable(gallery)} holds no image files")
        targets = [name]
    digest = file_digest(path)
    _, record, why = run_alignment_model(run, which)
    if why:
        log(f"note: indexing without the run's alignment stage: {why}")
    aligned = record["digest"] if record else None
    found = {t: fresh_index(run_dir, t, digest, root, embeddings=True, alignment_digest=aligned)[0] for t in targets}
    if gallery is not None and found[name] is not None and not _same_folder(found[name], folder, files):
        found[name] = None
    stale = [t for t in targets if found[t] is None]
    if stale:
        with run.lock():
            remove_temp_folders(run.file(runs.INDEX))
            if gallery is None:
                found.update(_write_domains(run_dir, which, stale, progress))
            else:
                found[name] = _write_folder(run_dir, which, name, folder, files, progress, log)
    return [IndexResult(index_folder(run_dir, t), found[t], t in stale) for t in targets]


def _same_folder(g: GalleryIndex, folder: Path, files: Sequence[Path]) -> bool:
    """Whether index ``g`` is of ``folder`` and of its image files as they are listed now."""
    listed = {e[0] for e in g.meta["files"]} | set(g.meta.get("skipped", ()))
    return g.meta.get("source") == str(folder) and listed == {str(f.relative_to(folder)) for f in files}


def _write_domains(run_dir: str | Path, which: str, names: Sequence[str], progress: bool) -> dict[str, GalleryIndex]:
    from ucdir_core.evaluation.embedding import embed
    from ucdir_core.inference.loading import load_trained

    trained = load_trained(run_dir, which, progress=progress)  # the run's data, checked against dataset.json
    cfg = trained.cfg
    stage, record, _ = run_alignment_model(runs.RunFolder(run_dir), which)
    sides = [i for i, d in enumerate(cfg.domains) if index_name(d, which) in names]
    emb = [embed(trained.model.encoder_k, trained.inputs[i].test_eval, trained.device, cfg.eval_batch_size,
                 cfg.workers, progress, desc=f"embed {cfg.domains[i]}").cpu().numpy() for i in sides]
    if stage is not None:
        emb = [stage.apply(e, i) for i, e in zip(sides, emb)]
    written = write_domain_indexes(run_dir, [cfg.domains[i] for i in sides], emb,
                                   [trained.inputs[i].test_eval.paths for i in sides], resolve_root(cfg),
                                   trained.checkpoint, which, alignment=record)
    return {g.meta["name"]: g for g in written}


def _write_folder(run_dir: str | Path, which: str, name: str, folder: Path, files: Sequence[Path], progress: bool,
                  log: Callable[[str], None]) -> GalleryIndex:
    meta, emb = folder_gallery(run_dir, which, name, folder, files, progress, log)
    return write_index(index_folder(run_dir, name), meta, emb)


def folder_gallery(run_dir: str | Path, which: str, name: str, folder: Path, files: Sequence[Path] | None = None,
                   progress: bool = False, log: Callable[[str], None] = print, model=None) -> tuple[dict, np.ndarray]:
    """The meta and embeddings of an index of the image folder ``folder`` (its ``files``, by default
    all its images), by the key encoder of checkpoint ``which`` (or of ``model``, a loaded
    :class:`~ucdir_core.inference.query.QueryModel`). Each row's domain is the folder's name. With
    the run's alignment stage, its rows are corrected as images of the run's second domain (the
    domain a query from neither domain's folder searches; such a query is corrected as the first's).

    Raises:
        DataError: no readable image among them.
    """
    files = image_files(folder) if files is None else files
    model = model or load_query_model(run_dir, which)
    emb, kept, skipped = model.embed_files([str(f) for f in files], progress=progress, log=log)
    if not kept:
        raise DataError(f"gallery folder {printable(folder)} holds no readable image")
    second = model.cfg.domains[1]
    record = {**model.alignment_record, "as": second} if model.alignment_record else None
    meta = gallery_meta(name, "folder", str(folder), folder, kept, [folder.name] * len(kept), emb.shape[1],
                        model.checkpoint, skipped, alignment=record)
    return meta, model.align(emb, second)


def export(indexes: Sequence[GalleryIndex], out: str | Path) -> tuple[Path, Path]:
    """Write the rows of ``indexes`` (read or built with their embeddings), in order, for use without
    this package: ``OUT/embeddings.npy`` (float32 ``(N, dim)``, unit rows; ``np.load(...,
    allow_pickle=False)``) and ``OUT/items.json`` (a list of ``{"path", "domain"}``, one per row,
    absolute paths), each written atomically.

    Raises:
        ValueError: ``out`` is a file.
        OSError: ``out`` cannot be written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--export {printable(out)} exists and is not a folder")
    emb = np.concatenate([g.embeddings for g in indexes]).astype(np.float32, copy=False)
    items = [{"path": os.path.abspath(p), "domain": d} for g in indexes for p, d in zip(g.paths, g.domains)]
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(emb), allow_pickle=False)
    atomic_write_bytes(out / EXPORT_EMBEDDINGS, buf.getvalue())
    atomic_write_bytes(out / EXPORT_ITEMS, (json.dumps(items, indent=1, ensure_ascii=False) + "\n").encode())
    return out / EXPORT_EMBEDDINGS, out / EXPORT_ITEMS
