"""What the notebooks show: a Figure saved with its caption and displayed inline, once, as a PNG of
moderate resolution with its caption under it and as its alt text; the run config as a short table.

Nothing here runs at import: the module picks no matplotlib backend and changes no setting.
"""

from __future__ import annotations

import base64
import html
import io
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from ucdir_core.companion.figures import save_figure
from ucdir_core.companion.paths import config_text, display_path


#: resolution (dots per inch) of the figures shown inline, and so stored in executed notebooks;
#: the files under ``figures/`` keep their own (``save_figure``'s ``dpi``)
DISPLAY_DPI = 72


#: the same for grids of many images (their saved files keep more detail)
GRID_DISPLAY_DPI = 60


def figure_png(fig, dpi: int = DISPLAY_DPI) -> bytes:
    """The figure as PNG bytes (tight bounding box, no software stamp)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


class CaptionedFigure:
    """A figure as a notebook shows it: the PNG, with its caption under it (``<figcaption>``) and as
    its alt text, in one HTML output (``<figure>``); plain text (a terminal, a LaTeX export) gets the
    caption. The image is stored once, in the HTML."""

    def __init__(self, png: bytes, caption: str | None, name: str = "figure"):
        self.png, self.caption, self.name = png, (caption or "").strip(), name

    def html(self) -> str:
        alt = html.escape(self.caption or self.name, quote=True)
        data = base64.b64encode(self.png).decode("ascii")
        img = f'<img src="data:image/png;base64,{data}" alt="{alt}" style="max-width: 100%; height: auto">'
        caption = f"\n<figcaption>{html.escape(self.caption)}</figcaption>" if self.caption else ""
        return f"<figure>\n{img}{caption}\n</figure>"

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        return {"text/html": self.html(), "text/plain": f"[figure {self.name}] {self.caption}".strip()}


def show_figure(fig, name: str, figures_dir: str | Path, caption: str | None = None, pdf: bool = False,
                dpi: int = 150, display_dpi: int = DISPLAY_DPI) -> None:
    """Save ``fig`` under ``figures_dir`` (PNG at ``dpi``, PDF with ``pdf``, ``caption`` beside it),
    display it inline as a PNG at ``display_dpi`` with ``caption`` under it and as its alt text
    (:class:`CaptionedFigure`), and close it.

    The figure is displayed as an image rather than through the kernel's matplotlib backend, so a
    notebook shows it the same way in JupyterLab and under papermill, at a resolution that keeps
    executed notebooks small; closing it keeps the inline backend from showing it a second time.
    Outside IPython nothing is displayed. Returns None, so a cell ending with it prints nothing.
    A figure shown without a caption is flagged by the report check
    (:func:`~ucdir_core.companion.report_checks.output_problems`).
    """
    import matplotlib.pyplot as plt

    save_figure(fig, name, figures_dir, pdf=pdf, caption=caption, dpi=dpi)
    if in_ipython():
        from IPython.display import display

        display(CaptionedFigure(figure_png(fig, display_dpi), caption, name))
    plt.close(fig)


#: the settings a reader needs to place a run (every other one is in the run folder's config.json)
CONFIG_KEYS = ("method", "dataset", "root", "domains", "split", "backbone", "image_size", "epochs", "batch_size",
               "lr", "num_clusters", "seed")


def config_table(cfg, keys: Sequence[str] = CONFIG_KEYS, full_at: str | Path | None = None) -> str:
    """The settings ``keys`` of a run config as a two-column Markdown table (the dataset root as
    :func:`~ucdir_core.companion.paths.display_path` shows it), and where the full config is
    (``full_at``), rather than the whole config as JSON.

    Raises:
        KeyError: a key the config does not have.
    """
    settings = json.loads(config_text(cfg))
    missing = [k for k in keys if k not in settings]
    if missing:
        raise KeyError(f"the config has no setting {', '.join(missing)}")

    def show(key: str, v) -> str:
        if key == "root" and not v:
            return "embedded"  # the digits built offline (:func:`~ucdir_core.companion.paths.dataset_location`)
        return ", ".join(map(str, v)) if isinstance(v, list) else str(v)

    lines = ["| setting | value |", "|---|---|"] + [f"| {k} | {show(k, settings[k])} |" for k in keys]
    if full_at is not None:
        lines.append(f"\nEvery setting ({len(settings)}): `{display_path(full_at)}`.")
    return "\n".join(lines)


class _Watched:
    """A text stream that remembers whether anything but whitespace was written to it."""

    def __init__(self, stream):
        self.stream, self.written = stream, False

    def write(self, text: str) -> int:
        self.written = self.written or bool(text.strip())
        return self.stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@contextmanager
def transient_log() -> Iterator[None]:
    """What the block prints (a training log) shows while it runs, in the notebook and in the
    terminal of a papermill run, and is cleared from the cell once the block has finished, so that
    an executed report keeps no long log (the run folder keeps it: ``history.jsonl``).

    Use it at the top of a cell: clearing removes the cell's earlier outputs too. Nothing is
    cleared when the block raises, or when anything was written to stderr (a warning stays for the
    report check to see), or outside IPython.
    """
    err = _Watched(sys.stderr)
    sys.stderr = err
    try:
        yield
    finally:
        sys.stderr = err.stream
    if in_ipython() and not err.written:
        from IPython.display import clear_output

        clear_output()


def in_ipython() -> bool:
    """Whether this runs in IPython (a notebook's kernel, or the IPython shell)."""
    try:
        from IPython import get_ipython
    except ImportError:  # IPython comes with the notebooks extra only
        return False
    return get_ipython() is not None
