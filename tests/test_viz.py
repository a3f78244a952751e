"""Figure functions: no backend chosen at import; each returns a Figure with the expected axes."""

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from ucdir_core.companion import figures as viz

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_package_leaves_matplotlib_backend_alone():
    """A library must not pick matplotlib's backend: the user's (here MPLBACKEND=svg) stays."""
    code = ("import pkgutil, importlib, matplotlib, ucdir_core\n"
            "for m in pkgutil.iter_modules(ucdir_core.__path__):\n"
            "    importlib.import_module('ucdir_core.' + m.name)\n"
            "import matplotlib.pyplot\n"
            "print(matplotlib.get_backend())\n")
    env = {**os.environ, "MPLBACKEND": "svg", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().lower() == "svg"


def _history(epochs=5, evaluated=None):
    rows = []
    for e in range(epochs):
        row = {"epoch": e, "loss_total": 5.0 - e, "loss_instance": 4.0 - e}
        if evaluated is None or e in evaluated:
            row["eval"] = {d: {"P@1": 40.0 + e, "P@5": 38.0 + e, "mAP": 30.0 + e} for d in ("a->b", "b->a")}
        rows.append(row)
    return rows


def test_training_curves_one_label_per_switch_on_epoch_and_no_overlap():
    switch_on = {"cluster": 1, "self_entropy": 2, "distance_of_distance": 2, "never": None}
    fig = viz.training_curves(_history(), switch_on)
    fig.canvas.draw()
    main_axes = [ax for ax in fig.axes if ax.get_xlabel() == "epoch"]
    assert len(main_axes) == 2
    for ax in main_axes:
        vlines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--" and len(set(ln.get_xdata())) == 1]
        assert sorted(ln.get_xdata()[0] for ln in vlines) == [1, 2]  # epochs 2's two losses share one line
    tops = [c for ax in main_axes for c in ax.child_axes]  # the switch-on labels, above each panel
    assert len(tops) == 2
    renderer = fig.canvas.get_renderer()
    for top in tops:
        labels = [t for t in top.xaxis.get_ticklabels() if t.get_text()]
        assert [t.get_text() for t in labels] == ["cluster", "self_entropy\ndistance_of_distance"]
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    # every evaluated epoch is plotted: 2 directions x 3 metrics, 5 points each
    curves = [ln for ln in main_axes[1].get_lines() if "->" in ln.get_label()]
    assert len(curves) == 6 and all(len(ln.get_xdata()) == 5 for ln in curves)
    plt.close(fig)


def test_training_curves_says_when_only_some_epochs_are_evaluated():
    fig = viz.training_curves(_history(evaluated={4}), {"cluster": 1})
    assert "1 of 5" in fig.axes[1].get_title()
    plt.close(fig)


def _results(anchors=True):
    dirs = [f"{a}->{b}" for a in "pqrs" for b in "pqrs" if a != b]  # 12 directions
    methods = ["baseline", "instance", "full"] + (["centred", "oracle"] if anchors else [])
    level = {"baseline": 40, "instance": 50, "full": 55, "centred": 35, "oracle": 80}
    rng = np.random.default_rng(0)
    return {split: {m: {d: {"P@1": level[m] + rng.normal(), "mAP": level[m] - 10 + rng.normal()} for d in dirs}
                    for m in methods} for split in ("full", "heldout")}


def test_ablation_directions_panels_points_and_anchor_lines():
    res = _results()
    seeds = {"full": {"full": res["full"]["full"]}}
    fig = viz.ablation_directions(res, ["baseline", "instance", "full"], ("P@1", "mAP"), seeds=seeds)
    assert len(fig.axes) == 4  # 2 splits x 2 metrics
    ax = fig.axes[0]
    direction_lines = [ln for ln in ax.get_lines() if ln.get_label() in res["full"]["full"]]
    assert len(direction_lines) == 12 and all(len(ln.get_xdata()) == 3 for ln in direction_lines)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["baseline", "instance", "full"]
    anchors = [ln for ln in ax.get_lines() if ln.get_linestyle() in (":", "-.") and len(set(ln.get_ydata())) == 1
               and ln.get_xdata()[0] == 0 and ln.get_xdata()[1] == 1]
    assert len(anchors) == 2  # centred below, oracle above
    assert {t.get_text().split()[0] for t in ax.texts} == {"centred", "oracle"}
    assert any(ln.get_marker() == "D" for ln in ax.get_lines())  # the second seed, full split only
    assert not any(ln.get_marker() == "D" for ln in fig.axes[2].get_lines())
    plt.close(fig)


def test_ablation_directions_without_anchors_draws_no_reference_line():
    fig = viz.ablation_directions(_results(anchors=False), ["baseline", "instance", "full"])
    assert all(not ax.texts for ax in fig.axes)
    plt.close(fig)


def _alignment_histories():
    def row(e, aligned=True):
        r = {"epoch": e, "loss_total": 1.0}
        if aligned:
            r["alignment"] = {"domain_mixing": 0.01 * e, "class_agreement": 70.0 + e,
                              "prototype_spread": {k: {"entropy": 1.0 + 0.1 * e, "prototypes_5pct": 3}
                                                   for k in ("a->a", "a->b", "b->a", "b->b")}}
        return r

    return {"instance": [row(0, False), row(1), row(2)], "full": [row(0), row(1), row(2)], "none": [row(0, False)]}


def test_alignment_curves_one_panel_per_quantity_and_cross_domain_spread():
    fig = viz.alignment_curves(_alignment_histories(), before={"domain_mixing": 0.0, "class_agreement": 65.0})
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 4 and "a->b" in titles[2] and "b->a" in titles[3]
    mixing = {ln.get_label(): list(ln.get_xdata()) for ln in fig.axes[0].get_lines()}
    assert mixing["instance"] == [1, 2] and mixing["full"] == [0, 1, 2]  # rows without a record skipped
    assert "none" not in mixing and "before training" in mixing
    plt.close(fig)


def test_alignment_curves_refuses_histories_without_records():
    with pytest.raises(ValueError, match="alignment"):
        viz.alignment_curves({"full": [{"epoch": 0}]})


def test_ablation_bars_axis_spans_the_values_so_that_a_point_shows():
    fig = viz.ablation_bars({"instance": {"P@1": 50.0, "mAP": 41.0}, "full": {"P@1": 51.5, "mAP": 42.0}}, ["P@1", "mAP"])
    lo, hi = fig.axes[0].get_ylim()
    assert 35 < lo < 41 and 51.5 < hi < 58  # not 0-100: 50.0 -> 51.5 is visible
    plt.close(fig)


def test_the_retrieval_grid_explains_its_frame_colours_in_the_image():
    img = np.zeros((4, 4, 3), np.uint8)
    fig = viz.image_grid([[img, img]], borders=[[None, "green"]],
                         border_legend={"green": "same class as the query", "red": "another class"})
    texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert texts == ["same class as the query", "another class"]
    plt.close(fig)


def test_image_grid_writes_each_cells_label_under_it():
    img = np.zeros((4, 4, 3), np.uint8)
    fig = viz.image_grid([[img, img, img], [img]], row_labels=["10th", "90th"],
                         cell_labels=[["dog", "dog", "horse"], ["guitar"]])
    axes = np.asarray(fig.axes).reshape(2, 3)
    assert [ax.get_xlabel() for ax in axes[0]] == ["dog", "dog", "horse"]
    assert axes[1][0].get_xlabel() == "guitar" and axes[1][0].get_ylabel() == "90th"
    assert axes[0][0].xaxis.label.get_fontweight() == "bold" and axes[0][1].xaxis.label.get_fontweight() == "normal"
    plt.close(fig)
