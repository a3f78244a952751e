"""Retrieval with a trained run: query images in, the closest gallery images out (``ucdir retrieve``).

A query is embedded by the checkpoint's key encoder alone (:mod:`ucdir_core.inference.query`: the
run's config, the checkpoint and the evaluation transform; no dataset is scanned) and searched in
the run's index of the gallery (:mod:`ucdir_core.inference.index`) when that index is fresh: made
from the same checkpoint bytes, over gallery files that are all still there unchanged. Otherwise
(no index yet, a run trained before indexes existed, a new checkpoint, a changed file) the gallery
is embedded in memory as before, with a one-line note naming ``ucdir index RUN``; retrieval never
writes into the run folder, so a read-only run answers either way, from its index when it has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ucdir_core.base.errors import DataError
from ucdir_core.base.text import printable
from ucdir_core.data.images import ImageMissingError, load_image
from ucdir_core.data.locations import resolve_root
from ucdir_core.evaluation.index import GalleryIndex, gallery_meta, in_memory, index_name, read_index
from ucdir_core.inference.index import fresh_index, folder_gallery, index_folder
from ucdir_core.inference.query import QueryModel, image_files, load_query_model
from ucdir_core.training import runs


@dataclass
class Retrieval:
    """The results of one query: its path, the domain it was taken to come from (None when it lies
    in neither domain's folder), the domain searched, and ``[{"rank", "path", "score"}]`` (cosine)."""

    query: str
    query_domain: str | None
    gallery_domain: str
    results: list[dict]

    def to_dict(self) -> dict:
        return {"query": self.query, "query_domain": self.query_domain, "gallery_domain": self.gallery_domain,
                "results": self.results}


def query_files(query: str | Path) -> list[Path]:
    """The query images ``query`` names: the file itself, or the image files of a folder (sorted,
    its sub-folders included).

    Raises:
        FileNotFoundError: no such file or folder.
        DataError: a folder that holds no image file.
    """
    path = Path(query)
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise DataError(f"query folder {printable(path)} holds no image files")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"query image not found: {printable(query)}")
    return [path]


def domain_of(path: str | Path, root: Path, domains: Sequence[str]) -> str | None:
    """The domain whose folder under ``root`` holds ``path``, or None."""
    resolved = Path(path).resolve()
    for d in domains:
        try:
            resolved.relative_to((root / d).resolve())
            return d
        except ValueError:
            continue
    return None


def _load_query(path: str | Path) -> Image.Image:
    """The query image (the one decode path).

    Raises:
        FileNotFoundError: the file is gone (one line naming it).
        DataError: no readable image (one line naming it and the decoder's reason).
    """
    try:
        return load_image(path)
    except ImageMissingError:
        raise FileNotFoundError(f"query image not found: {printable(path)}") from None
    except DataError as exc:
        raise DataError(f"query {printable(path)} is not a readable image ({getattr(exc, 'reason', None) or exc})"
                        ) from None


def retrieve(run_dir: str | Path, query: str | Path, gallery_domain: str | None = None, top_k: int = 10,
             which: str = "last", index: str | None = None,
             note: Callable[[str], None] | None = None) -> list[Retrieval]:
    """The ``top_k`` images closest to each query image (``query``: one image or a folder of them).

    The gallery is the run's evaluated images of ``gallery_domain``; by default the domain other
    than the query's (a query from neither domain's folder searches the run's second domain). With
    ``index``, the gallery is the run's index of that name instead (``ucdir index RUN --gallery
    DIR --name NAME``). A fresh index is searched as it is; otherwise the gallery is embedded in
    memory and ``note`` gets one line saying why and naming ``ucdir index RUN``. Writes nothing.

    A run trained with an alignment stage (``--set alignment=harmony``; its ``alignment.npz``, which
    goes with ``last.pt``) aligns the queries and the gallery the same way: each query corrected as
    images of its own domain (a query from neither domain's folder: as the domain other than the
    one searched), each gallery row as its domain's (a folder's: as the run's second domain).

    Raises:
        DataError: a gallery domain not of the run, or a query that is no readable image.
        ValueError: ``top_k`` below 1; both ``gallery_domain`` and ``index``.
        FileNotFoundError: no such query, run, checkpoint or index.
        RunError: a checkpoint that does not load; a gallery embedded in memory whose files changed
            since the run was trained.
    """
    run = runs.RunFolder(run_dir)
    cfg = run.config()
    domains = list(cfg.domains)
    if gallery_domain is not None and index is not None:
        raise ValueError("--gallery-domain and --index exclude each other")
    if gallery_domain is not None and gallery_domain not in domains:
        raise DataError(f"gallery domain {gallery_domain!r} is not one of the run's domains {domains}")
    if index is not None and not index_folder(run_dir, index).is_dir():
        raise FileNotFoundError(f"no index {printable(index)} in {printable(run.file(runs.INDEX))}; `ucdir index "
                                f"{printable(run_dir)} --gallery DIR --name {printable(index)}` makes one")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    files = query_files(query)
    images = [_load_query(f) for f in files]
    model = load_query_model(run_dir, which)
    root = resolve_root(cfg)
    queries = model.embed_images(images)
    source = [domain_of(f, root, domains) for f in files]
    searched = [gallery_domain or (domains[1 - domains.index(d)] if d else domains[1]) for d in source]
    wanted = [index or index_name(g, which) for g in searched]
    if model.alignment is not None:  # each query corrected as its own domain; from neither: as the other one
        own = [d or (domains[0] if index or g == domains[1] else domains[1]) for d, g in zip(source, searched)]
        queries = model.alignment.apply(queries, np.array([domains.index(d) for d in own]))
    elif model.alignment_note and note:
        note(f"retrieving without the run's alignment stage: {model.alignment_note}")
    galleries = _Galleries(run_dir, which, model, root, note or (lambda line: None))
    rows: dict[str, list[int]] = {}
    for i, name in enumerate(wanted):
        rows.setdefault(name, []).append(i)
    found: dict[int, list[tuple[int, float]]] = {}
    for name, members in rows.items():
        gallery = galleries.get(name)
        for i, hits in zip(members, gallery.search(queries[members], top_k)):
            found[i] = hits
    out = []
    for i, f in enumerate(files):
        gallery = galleries.get(wanted[i])
        paths = gallery.paths
        label = gallery.meta["source"] if gallery.meta["kind"] == "domain" else wanted[i]
        out.append(Retrieval(str(f), source[i], label, [{"rank": r + 1, "path": paths[row], "score": score}
                                                        for r, (row, score) in enumerate(found[i])]))
    return out


class _Galleries:
    """The galleries one ``retrieve`` call searches, each opened (or embedded) once: the run's fresh
    index of that name, or else the gallery embedded now, in memory, with a note."""

    def __init__(self, run_dir: str | Path, which: str, model: QueryModel, root: Path, note: Callable[[str], None]):
        self.run_dir, self.which, self.model, self.root, self.note = run_dir, which, model, root, note
        self._open: dict[str, GalleryIndex] = {}
        self._trained = None

    def get(self, name: str) -> GalleryIndex:
        if name not in self._open:
            self._open[name] = self._load(name)
        return self._open[name]

    def _load(self, name: str) -> GalleryIndex:
        record = self.model.alignment_record
        g, reason = fresh_index(self.run_dir, name, self.model.checkpoint["digest"], self.root,
                                alignment_digest=record["digest"] if record else None)
        if g is not None:
            return g
        domain = next((d for d in self.model.cfg.domains if index_name(d, self.which) == name), None)
        # a stale index of a folder still names its folder
        meta = None if domain is not None else read_index(index_folder(self.run_dir, name)).meta
        if meta is not None and meta.get("kind") == "domain":
            domain = meta["source"]
        run = printable(self.run_dir)
        which = "" if self.which == "last" else f" --which {self.which}"
        rebuild = (f"ucdir index {run}{which}" if domain is not None else
                   f"ucdir index {run} --gallery {printable(meta['source'])} --name {printable(name)}{which}")
        self.note(f"index {printable(name)} of {run} not used ({reason}); embedding its gallery now, in memory "
                  f"(`{rebuild}` writes a fresh index, which makes queries fast)")
        if domain is not None:
            return self._domain(domain, name)
        folder = Path(meta["source"])
        if not folder.is_dir():
            raise FileNotFoundError(f"gallery folder {printable(folder)} of index {printable(name)} is gone")
        meta, emb = folder_gallery(self.run_dir, self.which, name, folder, model=self.model, log=lambda line: None)
        return in_memory(meta, emb, folder)

    def _domain(self, domain: str, name: str) -> GalleryIndex:
        from ucdir_core.evaluation.embedding import embed
        from ucdir_core.inference.loading import load_trained

        if self._trained is None:
            self._trained = load_trained(self.run_dir, self.which)  # the run's data, checked against dataset.json
        trained = self._trained
        cfg = trained.cfg
        side = list(cfg.domains).index(domain)
        data = trained.inputs[side].test_eval
        emb = embed(trained.model.encoder_k, data, trained.device, cfg.eval_batch_size, cfg.workers)
        record = self.model.alignment_record
        meta = gallery_meta(name, "domain", domain, self.root, data.paths, [domain] * len(data.paths), emb.shape[1],
                            trained.checkpoint, alignment={**record, "as": domain} if record else None)
        return in_memory(meta, self.model.align(emb.cpu().numpy(), domain), self.root)
