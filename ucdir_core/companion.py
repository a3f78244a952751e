"""Helpers the notebooks call: config from notebook parameters, train-or-load, baselines, tables.

Logic lives here so that each notebook cell is a call and a display.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ucdir_core import runs
from ucdir_core.config import PRESETS, UCDIRConfig, get_preset
from ucdir_core.pair import DomainPair


def project_root(start: str | Path | None = None) -> Path:
    """The folder holding ``pyproject.toml`` above ``start`` (default: the working directory)."""
    here = Path(start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").exists() and (p / "ucdir_core").is_dir():
            return p
    return here


def dataset_name(data: str) -> str:
    """``digits`` or the benchmark a root folder holds (its folder name), else ``folder``."""
    if data == "digits":
        return "digits"
    name = Path(data).name.lower().replace("-", "_")
    return name if name in PRESETS else "folder"


SMOKE = dict(max_images_per_domain=64, epochs=2, warmup_epochs=1, cw_start=0, cw_sat=1, cw_weight_start=0.5,
             se_start=1, dod_start=1, batch_size=16, kmeans_restarts=1, workers=0, eval_batch_size=64)


def notebook_config(data: str = "digits", preset: str | None = None, domains: list[str] | None = None,
                    epochs: int | None = None, seed: int = 0, device: str = "auto", smoke: bool = False,
                    overrides: dict[str, Any] | None = None) -> UCDIRConfig:
    """The run config a notebook's parameters describe.

    ``data`` is ``"digits"`` or a dataset root, absolute or relative to the project root (so that a
    notebook opened in JupyterLab, whose kernel runs in ``notebooks/``, reads the same folder as
    papermill, which runs it in the project root). The config holds the resolved root (run folders
    are matched on it); captions show it with :func:`ucdir_core.reports.display_path`.

    ``smoke=True`` shrinks the run (64 images per domain, 2 epochs, every loss on from epoch 1,
    64 px input for ImageNet backbones) so that every notebook runs in seconds on a CPU.
    """
    name = dataset_name(data)
    preset = preset or (name if name in PRESETS else "folder")
    cfg = get_preset(preset)
    changes: dict[str, Any] = {"seed": seed, "device": device}
    if data != "digits":  # a relative root is read from the project root, wherever the kernel runs
        changes["root"] = str((project_root() / data).resolve())
        changes["dataset"] = name
    if domains:
        changes["domains"] = tuple(domains)
    if epochs is not None:
        changes["epochs"] = epochs
    cfg = cfg.replace(**changes)
    overrides = overrides or {}
    if preset == "folder" and "num_clusters" not in overrides:
        # K = the number of class folders both domains share, as on the command line
        from ucdir_core.data import shared_class_count

        located = cfg.replace(**{k: v for k, v in overrides.items() if k in ("root", "domains")})
        cfg = cfg.replace(num_clusters=(shared_class_count(located.root, located.domains),))
    if smoke:
        small = dict(SMOKE)
        if cfg.backbone != "small_cnn":
            small.update(image_size=64, resize_size=64)
        if epochs is not None:
            small["epochs"] = epochs
        cfg = cfg.replace(**small, num_clusters=(min(cfg.num_clusters[0], 7),))
    return cfg.replace(**overrides)


def run_name(cfg: UCDIRConfig, tag: str = "ucdir") -> str:
    a, b = cfg.domains
    return f"{cfg.dataset}-{a}-{b}-{tag}-{cfg.split}-s{cfg.seed}"


def train_or_load(cfg: UCDIRConfig, run_dir: str | Path, progress: bool = True) -> list[dict]:
    """The history of the run in ``run_dir``: trained now, resumed if it was cut short, or read back
    if it finished with the same config. A run there under another config is replaced."""
    from ucdir_core.pipeline import train

    run = runs.RunFolder(run_dir)
    if run.exists() and run.config() == cfg:
        history = run.history()
        if history and history[-1]["epoch"] == cfg.epochs - 1 and run.file(runs.SUMMARY).exists():
            return history
        return train(cfg, run_dir, resume=True, progress=progress)
    return train(cfg, run_dir, progress=progress, overwrite=True)


def summary(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / runs.SUMMARY).read_text())


def untrained_features(cfg: UCDIRConfig, progress: bool = False) -> dict[str, DomainPair[np.ndarray]]:
    """The pretrained backbone's pooled features, without any training, of the training images and
    of the evaluated images (evaluation transform), with their labels (for the anchors and the
    evaluation only).

    Whatever the input regime, its untrained trainable module composes with its inputs to the whole
    backbone (:mod:`ucdir_core.regimes`), so these are the backbone's own features.

    Returns:
        ``{"train", "train_labels", "test", "test_labels"}``, each a pair of (N_d, D) / (N_d,) arrays.
    """
    from ucdir_core.device import select_device
    from ucdir_core.pipeline import load_split_images
    from ucdir_core.regimes import build_inputs
    from ucdir_core.trainer import embed

    torch.manual_seed(cfg.seed)
    images = load_split_images(cfg, None, allow_unmatched_classes=True, check=False, log=lambda s: None)
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


def baseline_report(cfg: UCDIRConfig, progress: bool = False) -> tuple[dict, DomainPair[np.ndarray]]:
    """P@k and mAP of the backbone's pooled features without any training (the "baseline" row),
    on the same evaluated images and evaluation transform; also the features."""
    from ucdir_core.metrics import retrieval_report

    f = untrained_features(cfg, progress)
    feats = f["test"]
    report = retrieval_report(torch.from_numpy(feats.a), f["test_labels"].a, torch.from_numpy(feats.b),
                              f["test_labels"].b, cfg.eval_ks, names=tuple(cfg.domains))
    return report, feats


def anchor_rows(cfg: UCDIRConfig, progress: bool = False) -> tuple[dict[str, dict], dict[str, dict]]:
    """Retrieval reports and alignment of the three anchors (``baseline``, ``centered``, ``oracle``,
    :mod:`ucdir_core.anchors`) on the evaluated images of ``cfg``'s pair and split.

    Returns:
        ``({anchor: {direction: metrics}}, {anchor: {"domain_mixing", "class_agreement"}})``.
    """
    from ucdir_core.alignment import mixing_and_agreement
    from ucdir_core.anchors import anchor_embeddings
    from ucdir_core.metrics import retrieval_report

    f = untrained_features(cfg, progress)
    labels = f["test_labels"]
    reports, alignment = {}, {}
    for name, emb in anchor_embeddings(f["train"], f["train_labels"], f["test"]).items():
        reports[name] = retrieval_report(torch.from_numpy(emb.a), labels.a, torch.from_numpy(emb.b), labels.b,
                                         cfg.eval_ks, names=tuple(cfg.domains))
        alignment[name] = mixing_and_agreement(emb.a, labels.a, emb.b, labels.b)
    return reports, alignment


def run_embeddings(run_dir: str | Path, which: str = "last") -> tuple[DomainPair[np.ndarray], DomainPair[np.ndarray], Any]:
    """Key-encoder embeddings and labels of a run's evaluated images, and the trainer."""
    from ucdir_core.evaluation import load_run

    trainer = load_run(run_dir, which)
    emb = trainer.test_embeddings().map(lambda t: t.cpu().numpy())
    labels = trainer.inputs.map(lambda d: d.test_labels)
    return emb, labels, trainer


def mean_over_directions(report: dict[str, dict[str, float]]) -> dict[str, float]:
    keys = metric_order(next(iter(report.values())))
    return {k: float(np.mean([row[k] for row in report.values()])) for k in keys}


def provenance(cfg: UCDIRConfig, epoch_note: str) -> str:
    """One line saying how a number was obtained."""
    return (f"dataset {cfg.dataset}, domains {cfg.domains[0]}/{cfg.domains[1]}, split {cfg.split}, backbone "
            f"{cfg.backbone}, {cfg.image_size} px, {cfg.epochs} epochs, {epoch_note}, seed {cfg.seed}")


def metric_order(keys) -> list[str]:
    """P@k columns by k, then mAP (JSON files store them alphabetically)."""
    return sorted(keys, key=lambda k: (k == "mAP", int(k[2:]) if k.startswith("P@") else 0, k))


def markdown_table(rows: dict[str, dict[str, float]], fmt: str = "{:.1f}") -> str:
    cols = metric_order(next(iter(rows.values())))
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    lines += [f"| {name} | " + " | ".join(fmt.format(v[c]) for c in cols) + " |" for name, v in rows.items()]
    return "\n".join(lines)


def latex_table(rows: dict[str, dict[str, float]], caption: str) -> str:
    cols = metric_order(next(iter(rows.values())))
    body = "\n".join(f"{name.replace('_', chr(92) + '_')} & " + " & ".join(f"{v[c]:.1f}" for c in cols) + r" \\"
                     for name, v in rows.items())
    head = " & ".join(c.replace("@", "@") for c in cols)
    return ("\\begin{table}[t]\n\\centering\n\\begin{tabular}{l" + "r" * len(cols) + "}\n\\toprule\n & " + head
            + r" \\" + "\n\\midrule\n" + body + "\n\\bottomrule\n\\end{tabular}\n\\caption{" + caption
            + "}\n\\end{table}\n")


class OutputDirs:
    """Where a notebook writes: ``figures`` (committed ``figures/<dataset>`` for real runs,
    ``reports/<dataset>-smoke/figures`` for smoke runs) and ``runs`` (run folders)."""

    def __init__(self, cfg: UCDIRConfig, smoke: bool):
        root = project_root()
        tag = cfg.dataset + ("-smoke" if smoke else "")
        self.figures = root / "reports" / tag / "figures" if smoke else root / "figures" / cfg.dataset
        self.runs = root / "runs" / tag
        self.figures.mkdir(parents=True, exist_ok=True)
        self.runs.mkdir(parents=True, exist_ok=True)


def output_dirs(cfg: UCDIRConfig, smoke: bool) -> OutputDirs:
    return OutputDirs(cfg, smoke)


def counts_table(counts: dict[str, dict[str, int]]) -> str:
    """Markdown table: classes as rows, domains as columns, with totals."""
    classes = sorted({c for per in counts.values() for c in per})
    doms = list(counts)
    lines = ["| class | " + " | ".join(doms) + " |", "|---|" + "---:|" * len(doms)]
    lines += [f"| {c} | " + " | ".join(str(counts[d].get(c, 0)) for d in doms) + " |" for c in classes]
    lines.append("| **total** | " + " | ".join(str(sum(counts[d].values())) for d in doms) + " |")
    return "\n".join(lines)


def sample_grid(root: str | Path, counts: dict[str, dict[str, int]], per_class: int, seed: int):
    """Rows of sample images, one row per (domain, class); returns (rows, row labels, None)."""
    from ucdir_core.images import is_image_name, load_image

    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for d, per in counts.items():
        for c in sorted(per):
            files = sorted(p for p in (Path(root) / d / c).iterdir() if is_image_name(p))
            pick = rng.choice(len(files), size=min(per_class, len(files)), replace=False)
            imgs = []
            for i in sorted(pick):
                try:
                    imgs.append(load_image(files[i]))
                except OSError:
                    continue
            rows.append(imgs)
            labels.append(f"{d}/{c}")
    return rows, labels, None


def last_best_table(s: dict) -> str:
    """Markdown: last-epoch and best-epoch results of a run summary, labelled."""
    rows = {}
    for direction, m in s["last"]["eval"].items():
        rows[f"{direction}, last epoch ({s['last']['epoch']})"] = m
    for direction, m in s["best"]["eval"].items():
        rows[f"{direction}, best epoch ({s['best']['epoch']}; selected on evaluation labels)"] = m
    return markdown_table(rows)


def class_names(cfg: UCDIRConfig) -> list[str]:
    from ucdir_core.pipeline import load_split_images

    images = load_split_images(cfg, None, allow_unmatched_classes=True, check=False, log=lambda s: None)
    return list(images.a.train.classes)


def tables_by_training(cfg: UCDIRConfig, out: OutputDirs, progress: bool = True):
    """Train every domain pair of the dataset with ``cfg``'s settings; one table per split.

    Returns ``{title: (protocol line, {"method A->B": metrics})}``.
    """
    from itertools import combinations

    from ucdir_core.pipeline import resolve_root

    root = resolve_root(cfg)
    doms = sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    rows: dict[str, dict[str, float]] = {}
    for a, b in combinations(doms, 2):
        pair_cfg = cfg.replace(domains=(a, b))
        run_dir = out.runs / run_name(pair_cfg, "full")
        train_or_load(pair_cfg, run_dir, progress)
        base, _ = baseline_report(pair_cfg)
        for direction, m in summary(run_dir)["last"]["eval"].items():
            rows[f"UCDIR {direction}"] = m
        for direction, m in base.items():
            rows[f"backbone, no training {direction}"] = m
    protocol = (f"Protocol: dataset {cfg.dataset}, every pair trained separately, split {cfg.split}, backbone "
                f"{cfg.backbone}, {cfg.image_size} px, {cfg.epochs} epochs, last epoch, seed {cfg.seed}; 'backbone, "
                "no training' = pooled features of the same backbone, same evaluation transform.")
    return {f"{cfg.dataset}, split {cfg.split}": (protocol, rows)}


def tables_from_results(path: str | Path):
    """Per-direction tables (one per split) from a benchmark results JSON (``results/pacs.json``)."""
    res = json.loads(Path(path).read_text())
    cfg = res.get("config", {})
    out = {}
    from ucdir_core.ablation import ABLATIONS

    order = ["baseline", "centered", *ABLATIONS, "oracle"]  # the anchors below and above the methods
    for split, methods in res["results"].items():
        rows = {}
        for method in sorted(methods, key=lambda m: order.index(m) if m in order else len(order)):
            for direction, m in sorted(methods[method].items()):
                rows[f"{method} {direction}"] = m
        # the benchmark's regime line already names backbone, resolution, epochs and which epoch
        setting = res.get("regime") or (f"backbone {cfg.get('backbone')}, {cfg.get('image_size')} px, "
                                        f"{cfg.get('epochs')} epochs, last epoch")
        protocol = f"Protocol: {res.get('dataset', 'pacs')}, split {split}, seed {res.get('seed')}; {setting}"
        if "centered" in methods or "oracle" in methods:
            protocol += ("; anchors from the untrained features: centered = each domain's mean removed (no "
                         "labels), oracle = LDA fitted with the class labels (a ceiling, not a method)")
        out[f"{res.get('dataset', 'pacs')}, split {split}"] = (protocol, rows)
    return out


def save_tables(tables, stem: Path) -> list[Path]:
    """Write the tables as ``stem.md`` and ``stem.tex``."""
    md = "\n\n".join(f"### {t}\n\n{p}\n\n{markdown_table(r)}" for t, (p, r) in tables.items())
    tex = "\n".join(latex_table(r, f"{t}. {p}") for t, (p, r) in tables.items())
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".md"), stem.with_suffix(".tex")]
    paths[0].write_text(md + "\n")
    paths[1].write_text(tex)
    return paths

