"""Retrieval with a trained run: query images in, the closest images of the other domain out
(``ucdir retrieve``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from ucdir_core.base.errors import DataError
from ucdir_core.base.text import printable
from ucdir_core.data.images import ImageMissingError, is_image_name, load_image
from ucdir_core.data.locations import resolve_root
from ucdir_core.evaluation.embedding import embed
from ucdir_core.inference.loading import TrainedModel, load_trained
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
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p))
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
             which: str = "last") -> list[Retrieval]:
    """The ``top_k`` images closest to each query image (``query``: one image or a folder of them).

    The gallery is the run's evaluated images of ``gallery_domain``; by default the domain other
    than the query's (a query from neither domain's folder searches the run's second domain).

    Raises:
        DataError: a gallery domain not of the run, or a query that is no readable image.
        ValueError: ``top_k`` below 1.
        FileNotFoundError: no such query, run or checkpoint.
    """
    cfg = runs.RunFolder(run_dir).config()
    domains = list(cfg.domains)
    if gallery_domain is not None and gallery_domain not in domains:
        raise DataError(f"gallery domain {gallery_domain!r} is not one of the run's domains {domains}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    files = query_files(query)
    images = [_load_query(f) for f in files]
    trained = load_trained(run_dir, which)
    root = resolve_root(cfg)
    galleries: dict[str, torch.Tensor] = {}
    out = []
    for f, img in zip(files, images):
        q_domain = domain_of(f, root, domains)
        g_domain = gallery_domain or (domains[1 - domains.index(q_domain)] if q_domain else domains[1])
        if g_domain not in galleries:
            galleries[g_domain] = _gallery(trained, domains.index(g_domain))
        out.append(Retrieval(str(f), q_domain, g_domain, _top(trained, img, galleries[g_domain],
                                                               trained.inputs[domains.index(g_domain)].test_eval.paths,
                                                               top_k)))
    return out


def _gallery(trained: TrainedModel, side: int) -> torch.Tensor:
    cfg = trained.cfg
    return embed(trained.model.encoder_k, trained.inputs[side].test_eval, trained.device, cfg.eval_batch_size,
                 cfg.workers)


@torch.no_grad()
def _top(trained: TrainedModel, image: Image.Image, gallery: torch.Tensor, paths: Sequence[str],
         top_k: int) -> list[dict]:
    enc = trained.model.encoder_k.eval()
    q = enc(trained.to_input(image)[None].to(trained.device))
    scores = (q @ gallery.t())[0]
    top = scores.topk(min(top_k, scores.numel()))
    return [{"rank": r + 1, "path": paths[int(i)], "score": float(s)}
            for r, (s, i) in enumerate(zip(top.values, top.indices))]
