"""An executed notebook against its source and against what a reader should see: code cells that
drift, warnings, errors, progress bars, raw dumps, figures made but not shown or shown without a
caption and alt text; and papermill's paths made relative."""

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


#: the most lines of raw text (a printed data structure, a log) one cell of an executed report may
#: show; a table or a figure may be longer
MAX_TEXT_LINES = 15

#: MIME types (or their prefixes) a reader sees as a table, a figure or prose rather than raw text
RICH = ("text/html", "text/markdown", "text/latex", "image/")

_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_ALT = re.compile(r"""\balt\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_FIGCAPTION = re.compile(r"<figcaption\b[^>]*>(.*?)</figcaption>", re.IGNORECASE | re.DOTALL)


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


def _n_lines(text: str) -> int:
    return len(text.strip("\n").splitlines()) if text.strip() else 0


def _raw_text(output: Mapping[str, Any]) -> str:
    """What an output shows as raw text: a result's or display's ``text/plain`` with nothing richer
    (:data:`RICH`) beside it; empty otherwise (streams are counted per cell)."""
    if output["output_type"] not in ("execute_result", "display_data"):
        return ""
    data = output.get("data", {})
    if any(m.startswith(RICH) for m in data):
        return ""
    return _text(data.get("text/plain", ""))


def _shows_image(output: Mapping[str, Any]) -> bool:
    data = output.get("data", {})
    return any(m.startswith("image/") for m in data) or bool(_IMG.search(_text(data.get("text/html", ""))))


def _image_problems(outputs: list) -> list[str]:
    """What is missing from each image among ``outputs``: an HTML image needs alt text on every
    ``<img>`` and a ``<figcaption>``; a bare image (``image/png``, no HTML) has no alt text, and has a
    caption only when a Markdown output follows it."""
    problems = []
    for j, o in enumerate(outputs):
        data = o.get("data", {})
        page = _text(data.get("text/html", ""))
        imgs = _IMG.findall(page)
        if imgs:
            alts = [_ALT.search(img) for img in imgs]
            if not all(a and (a.group(1) or a.group(2) or "").strip() for a in alts):
                problems.append("an image without alt text")
            if not any(c.strip() for c in _FIGCAPTION.findall(page)):
                problems.append("an image without a caption")
        elif any(m.startswith("image/") for m in data):
            following = outputs[j + 1].get("data", {}) if j + 1 < len(outputs) else {}
            problems.append("an image without alt text" if "text/markdown" in following
                            else "an image without a caption or alt text")
    return problems


def output_problems(nb: Mapping[str, Any]) -> list[str]:
    """What an executed notebook shows that a reader should not see, or fails to show: stderr
    output (warnings), errors, progress bars (a widget, or a text bar such as ``12%|##  | 3/25``),
    raw dumps (a cell's printed text, or a result or display that is plain text only, over
    :data:`MAX_TEXT_LINES` lines: a whole history list, a config as JSON), images without a caption
    or without alt text (:func:`~ucdir_core.companion.display.show_figure` gives both), and cells
    that make a figure (:data:`FIGURE_CALLS`) with neither an image among their outputs nor a note
    (Markdown) saying why there is none. One line per problem; empty when there is none."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = _text(cell["source"])
        outputs = cell.get("outputs", [])
        stdout = ""
        for o in outputs:
            if o["output_type"] == "stream" and o.get("name") == "stderr":
                problems.append(f"cell {i}: stderr: {_text(o['text']).strip()[:200]}")
            elif o["output_type"] == "stream":
                stdout += _text(o.get("text", ""))
            elif o["output_type"] == "error":
                problems.append(f"cell {i}: error {o.get('ename')}: {o.get('evalue', '')[:200]}")
            if _is_progress_bar(o):
                problems.append(f"cell {i}: a progress bar is left in the output")
            n = _n_lines(_raw_text(o))
            if n > MAX_TEXT_LINES:
                problems.append(f"cell {i}: a raw {o['output_type']} of {n} lines (end the cell with ';', assign the "
                                "result, or show a table)")
        n = _n_lines(stdout)
        if n > MAX_TEXT_LINES:
            problems.append(f"cell {i}: {n} printed lines (show a table, a figure or a summary line)")
        problems += [f"cell {i}: {p}" for p in _image_problems(outputs)]
        makes_figure = any(call in src for call in FIGURE_CALLS)
        shown = any(_shows_image(o) for o in outputs)
        noted = any("text/markdown" in o.get("data", {}) for o in outputs)  # says why there is no figure
        if makes_figure and not (shown or noted):
            problems.append(f"cell {i}: makes a figure but shows no image")
    return problems
