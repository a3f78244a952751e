"""Figures: functions that take arrays or records and return a matplotlib Figure.

:func:`save_figure` writes PNG (and PDF for paper-style figures) under ``figures/`` with a
stable name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, name: str, figures_dir: str | Path, pdf: bool = False, caption: str | None = None,
                dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``figures_dir/name.png`` (and ``.pdf``); a caption goes to ``name.txt``."""
    out = Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png"]
    fig.savefig(paths[0], dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    if pdf:
        paths.append(out / f"{name}.pdf")
        fig.savefig(paths[1], bbox_inches="tight", metadata={"Creator": None, "Producer": None, "CreationDate": None})
    if caption:
        (out / f"{name}.txt").write_text(caption.strip() + "\n")
    return paths


def class_counts_figure(counts: Mapping[str, Mapping[str, int]]):
    """Grouped bars: images per class (x) and domain (colour). ``counts[domain][class]``."""
    import seaborn as sns

    rows = [(d, c, n) for d, per in counts.items() for c, n in per.items()]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len({r[1] for r in rows}) + 3), 3.5))
    sns.barplot(x=[r[1] for r in rows], y=[r[2] for r in rows], hue=[r[0] for r in rows], ax=ax)
    ax.set_xlabel("class")
    ax.set_ylabel("images")
    ax.tick_params(axis="x", rotation=45)
    ax.legend(title="domain", fontsize=8)
    fig.tight_layout()
    return fig


def image_grid(rows: Sequence[Sequence], row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, borders: Sequence[Sequence[str | None]] | None = None,
               cell: float = 1.1):
    """A grid of images (PIL images or arrays); optional coloured borders per cell (e.g. hit/miss)."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols, cell * n_rows), squeeze=False)
    for i in range(n_rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(rows[i]) or rows[i][j] is None:
                ax.axis("off")
                continue
            ax.imshow(np.asarray(rows[i][j]))
            colour = borders[i][j] if borders is not None and j < len(borders[i]) else None
            for spine in ax.spines.values():
                spine.set_visible(colour is not None)
                if colour is not None:
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(3)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], fontsize=7, rotation=0, ha="right", va="center")
            if i == 0 and col_labels is not None:
                ax.set_title(col_labels[j], fontsize=7)
    fig.tight_layout()
    return fig


def training_curves(history: Sequence[Mapping], switch_on: Mapping[str, int | None] | None = None):
    """Left: every loss term per epoch; right: P@k and mAP per direction. Dashed lines mark where
    the schedule switches each cluster-based loss on."""
    epochs = [r["epoch"] for r in history]
    fig, (ax_l, ax_m) = plt.subplots(1, 2, figsize=(11, 3.8))
    for key in sorted(k for k in history[0] if k.startswith("loss_")):
        ax_l.plot(epochs, [r.get(key, np.nan) for r in history], marker=".", label=key[5:])
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("loss (epoch mean)")
    evaluated = [r for r in history if "eval" in r]
    for direction in (evaluated[0]["eval"] if evaluated else {}):
        for metric in evaluated[0]["eval"][direction]:
            ax_m.plot([r["epoch"] for r in evaluated], [r["eval"][direction][metric] for r in evaluated],
                      marker=".", label=f"{direction} {metric}")
    ax_m.set_xlabel("epoch")
    ax_m.set_ylabel("percent")
    for ax in (ax_l, ax_m):
        for name, epoch in (switch_on or {}).items():
            if epoch is not None and epoch <= max(epochs):
                ax.axvline(epoch, ls="--", lw=0.8, color="grey")
                ax.text(epoch, ax.get_ylim()[1], f" {name}", rotation=90, va="top", fontsize=7, color="grey")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def ablation_bars(table: Mapping[str, Mapping[str, float]], metrics: Sequence[str]):
    """Bars of ``table[method][metric]`` grouped by metric."""
    methods = list(table)
    x = np.arange(len(metrics))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(metrics) + 3, 3.5))
    for i, m in enumerate(methods):
        ax.bar(x + i * width - 0.4 + width / 2, [table[m][k] for k in metrics], width, label=m)
    ax.set_xticks(x, metrics)
    ax.set_ylabel("percent (mean of both directions)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the axes, never over a bar
    fig.tight_layout()
    return fig


def umap_panels(panels: Mapping[str, np.ndarray], domain: np.ndarray, labels: np.ndarray,
                domain_names: Sequence[str], class_names: Sequence[str]):
    """One column per panel (e.g. before/after training), coloured by domain (top) and class (bottom).

    Shape:
        panels[name]: (N, 2) coordinates; domain, labels: (N,).
    """
    names = list(panels)
    fig, axes = plt.subplots(2, len(names), figsize=(4.6 * len(names), 8), squeeze=False)
    dom_colours = plt.get_cmap("Set1")
    cls_colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for j, name in enumerate(names):
        xy = panels[name]
        for d, dn in enumerate(domain_names):
            m = domain == d
            axes[0][j].scatter(xy[m, 0], xy[m, 1], s=3, alpha=0.6, color=dom_colours(d), label=dn)
        for c, cn in enumerate(class_names):
            m = labels == c
            if m.any():
                axes[1][j].scatter(xy[m, 0], xy[m, 1], s=3, alpha=0.6, color=cls_colours(c % 20), label=cn)
        axes[0][j].set_title(f"{name}: by domain")
        axes[1][j].set_title(f"{name}: by class")
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][-1].legend(markerscale=4, fontsize=8, loc="best")
    axes[1][-1].legend(markerscale=4, fontsize=7, loc="best", ncol=2)
    fig.tight_layout()
    return fig
