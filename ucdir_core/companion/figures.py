"""Figures: functions that take arrays or records and return a matplotlib Figure.

:func:`save_figure` writes PNG (and PDF for paper-style figures) under ``figures/`` with a
stable name. The module never picks matplotlib's backend (matplotlib's guidance for libraries):
a script gets matplotlib's default (Agg when there is no display), a notebook its inline backend,
and the notebook displays the Figure a function returns (:func:`ucdir_core.companion.display.show_figure`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from ucdir_core.companion.tables import metric_order


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
               cell: float = 1.1, border_legend: Mapping[str, str] | None = None,
               cell_labels: Sequence[Sequence[str | None]] | None = None):
    """A grid of images (PIL images or arrays); optional coloured borders per cell (e.g. hit/miss),
    explained in the figure itself by ``border_legend`` (colour -> meaning, drawn below the grid),
    and an optional label under each image (``cell_labels``, e.g. its class; the first column's in
    bold)."""
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
            label = cell_labels[i][j] if cell_labels is not None and j < len(cell_labels[i]) else None
            if label:
                ax.set_xlabel(label, fontsize=7, labelpad=2, fontweight="bold" if j == 0 else "normal")
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], fontsize=7, rotation=0, ha="right", va="center")
            if i == 0 and col_labels is not None:
                ax.set_title(col_labels[j], fontsize=7)
    if border_legend:
        from matplotlib.patches import Patch

        handles = [Patch(facecolor="none", edgecolor=c, linewidth=3, label=text) for c, text in border_legend.items()]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    else:
        fig.tight_layout()
    return fig


def training_curves(history: Sequence[Mapping], switch_on: Mapping[str, int | None] | None = None):
    """Left: every loss term per epoch; right: P@k and mAP per direction at every evaluated epoch
    (colour: metric; line style: direction).

    Dashed lines mark the epochs at which the schedule switches each cluster-based loss on. Losses
    switched on at the same epoch share one line, and their names are written above the axes at
    that epoch (one name a line), so that the labels overlap neither each other nor the curves.
    """
    epochs = [r["epoch"] for r in history]
    fig, (ax_l, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted(k for k in history[0] if k.startswith("loss_")):
        ax_l.plot(epochs, [r.get(key, np.nan) for r in history], marker=".", label=key[5:])
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("loss (epoch mean)")
    evaluated = [r for r in history if "eval" in r]
    if evaluated:
        directions = list(evaluated[0]["eval"])
        metrics = metric_order(evaluated[0]["eval"][directions[0]])
        styles = ["-", "--", ":", "-."]
        x = [r["epoch"] for r in evaluated]
        for i, metric in enumerate(metrics):
            for j, direction in enumerate(directions):
                ax_m.plot(x, [r["eval"][direction][metric] for r in evaluated], marker="o", ms=3,
                          color=plt.get_cmap("tab10")(i), ls=styles[j % len(styles)], label=f"{direction} {metric}")
        if len(evaluated) < len(history):
            ax_m.set_title(f"evaluated at {len(evaluated)} of {len(history)} epochs", fontsize=8)
    ax_m.set_xlabel("epoch")
    ax_m.set_ylabel("percent")
    groups: dict[int, list[str]] = {}
    for name, epoch in (switch_on or {}).items():
        if epoch is not None and min(epochs) <= epoch <= max(epochs):
            groups.setdefault(epoch, []).append(name)
    for ax in (ax_l, ax_m):
        if len(epochs) <= 30:
            ax.set_xticks(sorted(set(epochs)))
        for epoch in groups:
            ax.axvline(epoch, ls="--", lw=0.8, color="grey", zorder=0)
        if groups:
            top = ax.secondary_xaxis("top")
            top.set_xticks(sorted(groups), ["\n".join(groups[e]) for e in sorted(groups)], fontsize=7, color="grey")
            top.tick_params(length=0)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2 if ax is ax_m else 1)
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
    values = [table[m][k] for m in methods for k in metrics]
    if values:  # the axis spans the values, not 0-100, so that differences of a point show
        lo, hi = min(values), max(values)
        pad = max(1.0, 0.15 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
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


def ablation_directions(results: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
                        methods: Sequence[str], metrics: Sequence[str] = ("P@1", "mAP"),
                        seeds: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]] | None = None,
                        anchors: Sequence[str] = ("centred", "oracle")):
    """The ablation over every retrieval direction: one row of panels per split, one column per
    metric.

    In each panel, ``methods`` run along x; every direction is a point per method, joined across
    methods by a thin line of its own colour (so a reader follows one direction through the
    ablation); the black bar is the mean over directions. Where ``seeds`` holds a second seed of a
    method, its mean is an open diamond joined to the first seed's mean (the seed spread). Each
    name of ``anchors`` found in a split's results is drawn as a horizontal reference line at its
    mean over directions (e.g. per-domain centring below, a labelled linear map above).

    Shape:
        results[split][method][direction][metric]; seeds: the same layout, for the second seed.
    """
    splits = list(results)
    fig, axes = plt.subplots(len(splits), len(metrics), figsize=(5.2 * len(metrics) + 2.2, 3.6 * len(splits)),
                             squeeze=False)
    directions = sorted({d for split in splits for m in methods for d in results[split].get(m, {})})
    colours = plt.get_cmap("tab20" if len(directions) > 10 else "tab10")
    anchor_styles = {name: ls for name, ls in zip(anchors, [":", "-.", "--"])}
    for i, split in enumerate(splits):
        present = [m for m in methods if m in results[split]]
        x = np.arange(len(present))
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            for c, direction in enumerate(directions):
                y = [results[split][m].get(direction, {}).get(metric, np.nan) for m in present]
                ax.plot(x, y, marker="o", ms=3, lw=0.7, alpha=0.8, color=colours(c % 20), label=direction)
            means = [np.mean([v[metric] for v in results[split][m].values()]) for m in present]
            ax.hlines(means, x - 0.3, x + 0.3, color="black", lw=2.5, label="mean over directions", zorder=3)
            for xi, m in zip(x, present):
                second = (seeds or {}).get(split, {}).get(m)
                if second:
                    mean2 = np.mean([v[metric] for v in second.values()])
                    ax.plot([xi + 0.18, xi + 0.18], [means[xi], mean2], color="black", lw=0.8, zorder=3)
                    ax.plot(xi + 0.18, mean2, marker="D", ms=5, mfc="white", mec="black", ls="none", zorder=4,
                            label="second seed, mean")
            for name in anchors:
                if name in results[split]:
                    level = np.mean([v[metric] for v in results[split][name].values()])
                    ax.axhline(level, color="dimgrey", ls=anchor_styles[name], lw=1.2, zorder=1)
                    ax.annotate(f"{name} {level:.1f}", (1.0, level), xycoords=("axes fraction", "data"),
                                xytext=(3, 0), textcoords="offset points", va="center", fontsize=7, color="dimgrey")
            ax.set_xticks(x, present, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel(f"{metric} (%)")
            ax.set_title(f"split {split}: {metric}", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5),
               title="direction (query->gallery)", title_fontsize=7)
    fig.tight_layout()
    return fig


def alignment_curves(histories: Mapping[str, Sequence[Mapping]], before: Mapping[str, float] | None = None):
    """Domain mixing, class agreement and the spread over the other domain's prototypes per epoch,
    one line per method, from the ``alignment`` records of evaluated history rows.

    Panels: domain mixing (0 = domains apart, 1 = mixed); class agreement of the 10 nearest
    neighbours (%); then, for every cross-domain entry ``"a->b"`` of ``prototype_spread``, the
    entropy (nats) of how domain a's embeddings fall on domain b's prototypes. Rows without an
    ``alignment`` record are skipped. ``before`` (``{"domain_mixing", "class_agreement"}`` of the
    untrained features) is drawn as a dashed reference line.

    Shape:
        histories[method]: history rows, each ``{"epoch": int, "alignment": {"domain_mixing": float,
        "class_agreement": float, "prototype_spread": {"a->b": {"entropy": float, ...}}}}``.
    """
    rows = {m: [r for r in h if "alignment" in r] for m, h in histories.items()}
    rows = {m: r for m, r in rows.items() if r}
    if not rows:
        raise ValueError("no history row carries an alignment record")
    spread_keys = []
    for r in (r for rs in rows.values() for r in rs):
        for key in r["alignment"].get("prototype_spread", {}):
            a, _, b = key.partition("->")
            if a != b and key not in spread_keys:
                spread_keys.append(key)
    panels = [("domain_mixing", "domain mixing (0 apart, 1 mixed)"),
              ("class_agreement", "class agreement, 10-NN (%)")]
    panels += [(key, f"prototype spread {key}: entropy (nats)") for key in spread_keys]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.9 * len(panels) + 1.6, 3.4), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for c, (method, rs) in enumerate(rows.items()):
            if key in ("domain_mixing", "class_agreement"):
                pts = [(r["epoch"], r["alignment"].get(key)) for r in rs]
            else:
                pts = [(r["epoch"], r["alignment"].get("prototype_spread", {}).get(key, {}).get("entropy")) for r in rs]
            pts = [(e, v) for e, v in pts if v is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, color=plt.get_cmap("tab10")(c), label=method)
        if before and key in before:
            ax.axhline(before[key], color="grey", ls="--", lw=1, label="before training")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig
