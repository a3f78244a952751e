"""The runs behind the notebooks: a config from notebook parameters, train-or-load, the untrained
features and the anchors, a trained run's embeddings.

Logic lives here so that each notebook cell is a call and a display.
"""

from __future__ import annotations

import json
import os
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ucdir_core.align.params import AlignmentParams
from ucdir_core.align.stage import AlignmentModel, fit_stage
from ucdir_core.base.device import select_device
from ucdir_core.base.pair import DomainPair
from ucdir_core.base.seeding import seed_model_init
from ucdir_core.companion.paths import OutputDirs, dataset_name, project_root
from ucdir_core.config.presets import PRESETS, get_preset, preset_for_method
from ucdir_core.config.rows import row_config
from ucdir_core.config.run import RunConfig, config_differences
from ucdir_core.data.folders import with_folder_clusters
from ucdir_core.data.inputs import build_inputs
from ucdir_core.data.locations import resolve_root
from ucdir_core.data.splits import load_split_images
from ucdir_core.evaluation.alignment import class_discovery, mixing_and_agreement
from ucdir_core.evaluation.anchors import anchor_embeddings
from ucdir_core.evaluation.embedding import embed
from ucdir_core.evaluation.metrics import retrieval_report
from ucdir_core.inference.loading import TrainedModel, load_trained
from ucdir_core.method.params import FULL_ROW, METHOD_ROWS, TITLES
from ucdir_core.method.registry import build_method
from ucdir_core.training import runs
from ucdir_core.training.build import train


#: what smoke mode changes in every run (shared keys) ...
SMOKE = dict(max_images_per_domain=64, epochs=2, batch_size=16, kmeans_restarts=1, workers=0, eval_batch_size=64,
             keep_checkpoints="last")
#: ... and in each method's parameters: every loss on from epoch 1 of 2 (ProtoOT's share 0.5 already is)
SMOKE_METHOD: dict[str, dict[str, Any]] = {
    "ucdir": dict(clustering_start=1, cluster_contrastive_ramp_after=0, cluster_contrastive_ramp_end=1,
                  cluster_contrastive_weight_initial=0.5, self_entropy_start=1, distance_of_distance_start=1),
    "protoot": {},
}


def notebook_config(data: str = "digits", preset: str | None = None, domains: list[str] | None = None,
                    epochs: int | None = None, seed: int = 0, device: str = "auto", smoke: bool = False,
                    overrides: dict[str, Any] | None = None, method: str | None = None) -> RunConfig:
    """The run config a notebook's parameters describe; with ``method``, the same data and regime
    training that method (the preset's counterpart, :func:`~ucdir_core.config.presets.preset_for_method`).

    ``data`` is ``"digits"`` or a dataset root, absolute or relative to the project root (so that a
    notebook opened in JupyterLab, whose kernel runs in ``notebooks/``, reads the same folder as
    papermill, which runs it in the project root). The config holds the resolved root (run folders
    are matched on it); captions show it with :func:`ucdir_core.companion.paths.display_path`.

    ``smoke=True`` shrinks the run (64 images per domain, 2 epochs, every loss on from epoch 1,
    64 px input for ImageNet backbones) so that every notebook runs in seconds on a CPU.
    """
    name = dataset_name(data)
    preset = preset or (name if name in PRESETS else "folder")
    if method is not None:
        preset = preset_for_method(preset, method)
    cfg = get_preset(preset)
    changes: dict[str, Any] = {"seed": seed, "device": device}
    if data != "digits":  # a relative root is read from the project root, wherever the kernel runs
        changes["root"] = os.path.abspath(project_root() / data)  # symlinks kept: captions show the path as laid out
        changes["dataset"] = name
    if domains:
        changes["domains"] = tuple(domains)
    if epochs is not None:
        changes["epochs"] = epochs
    cfg = cfg.replace(**changes)
    overrides = overrides or {}
    if preset == "folder" and "num_clusters" not in overrides:
        # K = the number of class folders both domains share, as on the command line
        located = cfg.replace(**{k: v for k, v in overrides.items() if k in ("root", "domains")})
        cfg = cfg.replace(num_clusters=with_folder_clusters(located).num_clusters)
    if smoke:
        small = {**SMOKE, **SMOKE_METHOD[cfg.method]}
        if cfg.backbone != "small_cnn":
            small.update(image_size=64, resize_size=64)
        if epochs is not None:
            small["epochs"] = epochs
        cfg = cfg.replace(**small, num_clusters=(min(cfg.num_clusters[0], 7),))
    return cfg.replace(**overrides)


def run_name(cfg: RunConfig, tag: str = "ucdir") -> str:
    a, b = cfg.domains
    return f"{cfg.dataset}-{a}-{b}-{tag}-{cfg.split}-s{cfg.seed}"


def train_or_load(cfg: RunConfig, run_dir: str | Path, progress: bool = True) -> list[dict]:
    """The history of the run in ``run_dir``: trained now, resumed if it was cut short, or read back
    if it finished with the same config. A run there under another config is replaced."""
    run = runs.RunFolder(run_dir)
    if run.exists() and not config_differences(run.config().to_dict(), cfg):
        history = run.history()
        if history and history[-1]["epoch"] == cfg.epochs - 1 and run.file(runs.SUMMARY).exists():
            return history
        return train(cfg, run_dir, resume=True, progress=progress)
    return train(cfg, run_dir, progress=progress, overwrite=True)


def summary(run_dir: str | Path) -> dict:
    """A finished run's ``summary.json`` (last and best epoch)."""
    return json.loads((Path(run_dir) / runs.SUMMARY).read_text())


def untrained_features(cfg: RunConfig, progress: bool = False) -> dict[str, DomainPair[np.ndarray]]:
    """The pretrained backbone's pooled features, without any training, of the training images and
    of the evaluated images (evaluation transform), with their labels (for the anchors and the
    evaluation only).

    Whatever the input pipeline, its untrained trainable module composes with its inputs to the whole
    backbone (:mod:`ucdir_core.data.inputs`), so these are the backbone's own features.

    Returns:
        ``{"train", "train_labels", "test", "test_labels"}``, each a pair of (N_d, D) / (N_d,) arrays.
    """
    seed_model_init(cfg.seed)
    images = load_split_images(cfg, None, None, allow_unmatched_classes=True, check=False, log=lambda s: None)
    inputs = build_inputs(cfg, images, progress)
    device = select_device(cfg.device)
    module = inputs.module.to(device).eval()

    def features(dataset) -> np.ndarray:
        return embed(module, dataset, device, cfg.eval_batch_size, cfg.workers, progress).cpu().numpy()

    test = inputs.domains.map(lambda d: features(d.test_eval))
    same = all(d.test_is_train for d in inputs.domains)
    train = test if same else inputs.domains.map(lambda d: features(d.train_eval))
    return {"train": train, "train_labels": images.map(lambda s: np.asarray(s.train.labels)),
            "test": test, "test_labels": inputs.domains.map(lambda d: np.asarray(d.test_labels))}


def baseline_report(cfg: RunConfig, progress: bool = False) -> tuple[dict, DomainPair[np.ndarray]]:
    """P@k and mAP of the backbone's pooled features without any training (the "baseline" row),
    on the same evaluated images and evaluation transform; also the features."""
    f = untrained_features(cfg, progress)
    feats = f["test"]
    report = retrieval_report(torch.from_numpy(feats.a), f["test_labels"].a, torch.from_numpy(feats.b),
                              f["test_labels"].b, cfg.eval_ks, names=tuple(cfg.domains))
    return report, feats


def anchor_rows(cfg: RunConfig, progress: bool = False, features: dict[str, DomainPair[np.ndarray]] | None = None
                ) -> tuple[dict[str, dict], dict[str, dict]]:
    """Retrieval reports and alignment of the three anchors (``baseline``, ``centred``, ``oracle``,
    :mod:`ucdir_core.evaluation.anchors`) on the evaluated images of ``cfg``'s pair and split, from
    ``features`` (:func:`untrained_features` of ``cfg``) when the caller has them already.

    Returns:
        ``({anchor: {direction: metrics}}, {anchor: {"domain_mixing", "class_agreement"}})``.
    """
    f = features if features is not None else untrained_features(cfg, progress)
    labels = f["test_labels"]
    reports, alignment = {}, {}
    for name, emb in anchor_embeddings(f["train"], f["train_labels"], f["test"]).items():
        reports[name] = retrieval_report(torch.from_numpy(emb.a), labels.a, torch.from_numpy(emb.b), labels.b,
                                         cfg.eval_ks, names=tuple(cfg.domains))
        alignment[name] = mixing_and_agreement(emb.a, labels.a, emb.b, labels.b)
    return reports, alignment


def run_embeddings(run_dir: str | Path, which: str = "last"
                   ) -> tuple[DomainPair[np.ndarray], DomainPair[np.ndarray], TrainedModel]:
    """Key-encoder embeddings and labels of a run's evaluated images, and the loaded model."""
    trained = load_trained(run_dir, which)
    emb = trained.embedder.test_embeddings().map(lambda t: t.cpu().numpy())
    labels = trained.inputs.map(lambda d: d.test_labels)
    return emb, labels, trained


def method_runs(out: OutputDirs, data: str, preset: str | None, domains: list[str] | None, epochs: int | None,
                seed: int, device: str, smoke: bool) -> dict[str, tuple[RunConfig, Path]]:
    """Every table row's config and run folder for a notebook's parameters: each method's rows
    (:data:`~ucdir_core.method.params.METHOD_ROWS`) from that method's counterpart of the
    notebook's preset, in table order."""
    out_rows = {}
    for method, rows in METHOD_ROWS.items():
        cfg = notebook_config(data, preset, domains, epochs, seed, device, smoke, method=method)
        for row in rows:
            out_rows[row] = (row_config(cfg, row), out.runs / run_name(cfg, row))
    return out_rows


def method_title(cfg: RunConfig) -> str:
    """The name of the method ``cfg`` trains, as titles and prose write it (UCDIR, ProtoOT)."""
    return TITLES[cfg.method]


def full_row(cfg: RunConfig) -> str:
    """The table row that is the whole method ``cfg`` trains (``full`` for UCDIR, ``protoot``)."""
    return FULL_ROW[cfg.method]


def aligned_embeddings(trained: TrainedModel, alignment: str = "harmony"
                       ) -> tuple[DomainPair[np.ndarray], AlignmentModel]:
    """A trained run's evaluated embeddings after the alignment stage ``alignment`` (its default
    settings), fitted on the run's training embeddings with the domain as the batch variable (no
    label), and the fitted model (evaluate them with :func:`embedding_diagnostics`)."""
    model = trained.embedder.fit_alignment(AlignmentParams(alignment=alignment))
    emb = trained.embedder.test_embeddings().map(lambda t: t.cpu().numpy())
    return DomainPair(model.apply(emb.a, 0), model.apply(emb.b, 1)), model


def embedding_diagnostics(emb: DomainPair[np.ndarray], labels: DomainPair[np.ndarray], cfg: RunConfig
                          ) -> dict[str, float]:
    """Mean P@1 and mAP of both directions, domain mixing, class agreement, and class discovery
    (adjusted Rand index and balance of k-means with K = the number of classes on both domains
    together) of one set of evaluated embeddings; labels are read for these measures only."""
    report = retrieval_report(emb.a, labels.a, emb.b, labels.b, (1,), names=tuple(cfg.domains))
    k = len(np.unique(np.r_[labels.a, labels.b]))
    return {"P@1": float(np.mean([m["P@1"] for m in report.values()])),
            "mAP": float(np.mean([m["mAP"] for m in report.values()])),
            **mixing_and_agreement(emb.a, labels.a, emb.b, labels.b),
            **class_discovery(emb.a, emb.b, labels.a, labels.b, k, seed=cfg.seed)}


def compare_alignment(train: DomainPair[np.ndarray], test: DomainPair[np.ndarray], labels: DomainPair[np.ndarray],
                      cfg: RunConfig, params: AlignmentParams) -> dict[str, dict[str, Any]]:
    """One encoder's evaluated embeddings before and after the alignment stage ``params`` names,
    fitted on ``train`` (the training images' embeddings, the domain as the batch variable, no
    label) and applied to ``test`` (the evaluated images'; the same images under the full split).
    Labels are read only for the measures.

    Shape:
        train: pair of (N_d, dim); test: pair of (M_d, dim); labels: pair of (M_d,).

    Returns:
        ``{"before": m, "after": m}``, each ``m`` = ``{"eval": {direction: P@k and mAP at cfg.eval_ks},
        "domain_mixing", "class_agreement", "adjusted_rand", "balance"}`` (the last two:
        :func:`~ucdir_core.evaluation.alignment.class_discovery` with K = the number of classes).

    Raises:
        ValueError: ``params.alignment`` is ``none``, or embeddings of mismatched width.
    """
    if params.alignment == "none":
        raise ValueError("compare_alignment needs an alignment stage, got alignment=none")
    model = fit_stage(params, train.a, train.b)
    k = len(np.unique(np.r_[labels.a, labels.b]))

    def measures(emb: DomainPair[np.ndarray]) -> dict[str, Any]:
        a, b = (np.ascontiguousarray(x, dtype=np.float32) for x in emb)
        return {"eval": retrieval_report(torch.from_numpy(a), labels.a, torch.from_numpy(b), labels.b, cfg.eval_ks,
                                         names=tuple(cfg.domains)),
                **mixing_and_agreement(a, labels.a, b, labels.b),
                **class_discovery(a, b, labels.a, labels.b, k, seed=cfg.seed)}

    return {"before": measures(test), "after": measures(DomainPair(model.apply(test.a, 0), model.apply(test.b, 1)))}


def run_alignment(run_dir: str | Path, params: AlignmentParams, which: str = "last") -> dict[str, dict[str, Any]]:
    """:func:`compare_alignment` of a trained run's key-encoder embeddings (fitted on its training
    images, applied to its evaluated images). Writes nothing into ``run_dir``."""
    test, labels, trained = run_embeddings(run_dir, which)
    return compare_alignment(trained.embedder.train_embeddings().map(lambda t: t.cpu().numpy()), test, labels,
                             trained.cfg, params)


def switch_on_epochs(cfg: RunConfig) -> dict[str, int | None]:
    """The first epoch at which each of the method's loss terms after the first is on (None: never)."""
    return build_method(cfg.method_params, cfg.num_clusters, cfg.epochs).switch_on_epochs(cfg.epochs)


def class_names(cfg: RunConfig) -> list[str]:
    """The dataset's class names (label order)."""
    images = load_split_images(cfg, None, None, allow_unmatched_classes=True, check=False, log=lambda s: None)
    return list(images.a.train.classes)


def tables_by_training(cfg: RunConfig, out: OutputDirs, progress: bool = True):
    """Train every domain pair of the dataset with ``cfg``'s settings; one table per split.

    Returns ``{title: (protocol line, {"method A->B": metrics})}``.
    """
    root = resolve_root(cfg)
    doms = sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    rows: dict[str, dict[str, float]] = {}
    for a, b in combinations(doms, 2):
        pair_cfg = cfg.replace(domains=(a, b))
        run_dir = out.runs / run_name(pair_cfg, "full")
        train_or_load(pair_cfg, run_dir, progress)
        base, _ = baseline_report(pair_cfg)
        for direction, m in summary(run_dir)["last"]["eval"].items():
            rows[f"{cfg.method} {direction}"] = m
        for direction, m in base.items():
            rows[f"backbone, no training {direction}"] = m
    protocol = (f"Protocol: dataset {cfg.dataset}, every pair trained separately, split {cfg.split}, backbone "
                f"{cfg.backbone}, {cfg.image_size} px, {cfg.epochs} epochs, last epoch, seed {cfg.seed}; 'backbone, "
                "no training' = pooled features of the same backbone, same evaluation transform.")
    return {f"{cfg.dataset}, split {cfg.split}": (protocol, rows)}
