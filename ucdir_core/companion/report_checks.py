"""An executed notebook against its source and against what a reader should see: code cells that
drift, warnings, errors, figures made but not shown; and papermill's paths made relative."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from ucdir_core.companion.paths import display_path


def code_cells(nb: Mapping[str, Any]) -> list[str]:
    """Sources of the code cells of a notebook (nbformat node or JSON dict), without the cell
    papermill injects (tagged ``injected-parameters``)."""
    out = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        src = cell["source"]
        out.append("".join(src) if isinstance(src, list) else src)
    return out


def report_drift(report: Mapping[str, Any], source: Mapping[str, Any]) -> list[str]:
    """How an executed report's code differs from its source notebook's: one line per differing
    code cell (empty when they agree)."""
    a, b = code_cells(report), code_cells(source)
    problems = [f"code cell {i}: report and source differ" for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if len(a) != len(b):
        problems.append(f"{len(a)} code cells in the report, {len(b)} in the source")
    return problems


def relative_papermill_paths(nb: Mapping[str, Any], root: str | Path) -> None:
    """Replace the absolute input and output paths papermill records in a notebook's metadata by
    paths relative to ``root`` (in place)."""
    meta = nb.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = display_path(meta[key], root)


#: calls in a notebook cell that make a figure (each such cell must show it, :func:`show_figure`)
FIGURE_CALLS = ("class_counts_figure(", "image_grid(", "training_curves(", "ablation_bars(", "umap_panels(",
                "ablation_directions(", "alignment_curves(", "ablation_over_directions(")


_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+")


def _is_progress_bar(output: Mapping[str, Any]) -> bool:
    """Whether a cell output is a progress bar: a widget, or text that draws one."""
    data = output.get("data", {})
    if "application/vnd.jupyter.widget-view+json" in data:
        return True
    text = output.get("text", data.get("text/plain", ""))
    text = "".join(text) if isinstance(text, list) else text
    return bool(_BAR.search(text)) or "\r" in text


def output_problems(nb: Mapping[str, Any]) -> list[str]:
    """What an executed notebook shows that a reader should not see, or fails to show: stderr
    output (warnings), errors, progress bars (a widget, or a text bar such as ``12%|##  | 3/25``),
    and cells that make a figure (:data:`FIGURE_CALLS`) with neither an image among their outputs
    nor a note (Markdown) saying why there is none. One line per problem; empty when there is none."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        outputs = cell.get("outputs", [])
        for o in outputs:
            if o["output_type"] == "stream" and o.get("name") == "stderr":
                text = "".join(o["text"]) if isinstance(o["text"], list) else o["text"]
                problems.append(f"cell {i}: stderr: {text.strip()[:200]}")
            elif o["output_type"] == "error":
                problems.append(f"cell {i}: error {o.get('ename')}: {o.get('evalue', '')[:200]}")
            if _is_progress_bar(o):
                problems.append(f"cell {i}: a progress bar is left in the output")
        makes_figure = any(call in src for call in FIGURE_CALLS)
        shown = any("image/png" in o.get("data", {}) for o in outputs)
        noted = any("text/markdown" in o.get("data", {}) for o in outputs)  # says why there is no figure
        if makes_figure and not (shown or noted):
            problems.append(f"cell {i}: makes a figure but shows no image")
    return problems
