"""What the notebooks show: a Figure saved with its caption and displayed inline, once, as a PNG of
moderate resolution.

Nothing here runs at import: the module picks no matplotlib backend and changes no setting.
"""

from __future__ import annotations

import io
from pathlib import Path

from ucdir_core.companion.figures import save_figure


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


def show_figure(fig, name: str, figures_dir: str | Path, caption: str | None = None, pdf: bool = False,
                dpi: int = 150, display_dpi: int = DISPLAY_DPI) -> None:
    """Save ``fig`` under ``figures_dir`` (PNG at ``dpi``, PDF with ``pdf``, ``caption`` beside it),
    display it inline as a PNG at ``display_dpi``, and close it.

    The figure is displayed as an image rather than through the kernel's matplotlib backend, so a
    notebook shows it the same way in JupyterLab and under papermill, at a resolution that keeps
    executed notebooks small; closing it keeps the inline backend from showing it a second time.
    Outside IPython nothing is displayed. Returns None, so a cell ending with it prints nothing.
    """
    import matplotlib.pyplot as plt


    save_figure(fig, name, figures_dir, pdf=pdf, caption=caption, dpi=dpi)
    if in_ipython():
        from IPython.display import Image, display

        display(Image(data=figure_png(fig, display_dpi), format="png"))
    plt.close(fig)


def in_ipython() -> bool:
    """Whether this runs in IPython (a notebook's kernel, or the IPython shell)."""
    try:
        from IPython import get_ipython
    except ImportError:  # IPython comes with the notebooks extra only
        return False
    return get_ipython() is not None
