"""One small figure style for the report, applied through ``rc_context`` (never globally),
and atomic saving of a figure as PNG and PDF.

Figures are plain ``matplotlib.figure.Figure`` objects rendered by the Agg/PDF canvases on
save: pyplot and its global backend state are never touched, so the report runs headless
and leaves a caller's matplotlib setup alone."""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from jaxprobe.report._pdf_fonts import reuse_font_subsets

COLUMN_WIDTH = 3.4  # in, one column of a two-column paper
PAGE_WIDTH = 7.0    # in, both columns
DPI = 200  # the brief: PNG at >= 200 dpi; the PDF is the vector original
SKIP_INPUT = {"marker": "^", "color": "#1b9e3a", "label": "skip input"}
SKIP_OUTPUT = {"marker": "*", "color": "#f28e00", "label": "skip output"}
POOR_FIT_COLOR = "#c0182a"
LAYER_COLORS = ("#2c7bb6", "#7b3294", "#d7191c", "#fdae61", "#1a9641", "#636363")  # layer index in a block (MUSE 0..3, GTCRN 0..4)
SEQ_CMAP = "viridis"
DIST_CMAP = "magma_r"

RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "lines.linewidth": 1.0,
    "lines.markersize": 3.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,
    "svg.fonttype": "none",
    "savefig.dpi": DPI,
    "figure.dpi": 100,
}


@contextlib.contextmanager
def style():
    with matplotlib.rc_context(RC):
        yield


def new_figure(width: float, height: float) -> Figure:
    """A ``width`` x ``height`` inch figure with constrained layout (saved with a tight box,
    so the file may be trimmed by a few hundredths of an inch of white margin)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.03, h_pad=0.03)
    return fig


PAD_INCHES = 0.02  # white margin around the tight box


def _atomic_savefig(fig, path: Path, fmt: str, bbox) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches=bbox)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _solve_layout(fig):
    """Solve the figure's layout as a 200 dpi PNG save would, and return its tight box (inches,
    padded); the layout engine is then switched off, so every save draws this layout.

    ``savefig(bbox_inches="tight")`` does the same with a whole extra draw first (every artist
    drawn into a renderer that discards it) and does it again for every format; here the layout
    is solved once and the box measured once, on the same Agg renderer, so the PNG comes out
    byte for byte as ``savefig`` makes it and the PDF shares its layout and box."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the canvas a PNG save draws on
    dpi = fig.dpi
    fig.dpi = DPI
    try:
        renderer = canvas.get_renderer()
        engine = fig.get_layout_engine()
        if engine is not None:
            engine.execute(fig)
        box = fig.get_tightbbox(renderer).padded(PAD_INCHES)
    finally:
        fig.dpi = dpi
    with matplotlib.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)  # keep the solved layout: no second solve
    return box


def save(fig, out_dir, stem: str, formats=("png", "pdf")) -> tuple[Path, Path | None]:
    """Write ``stem.png`` (always) and ``stem.pdf`` (if in ``formats``) into ``out_dir``
    atomically (temp name, then ``os.replace``).

    The layout is solved and the tight box measured once (:func:`_solve_layout`); each file is
    then one draw of that layout into that box, so the PNG and the PDF show the same layout."""
    formats = tuple(formats)
    if "png" not in formats or not set(formats) <= {"png", "pdf"}:
        raise ValueError(f"The 'formats' parameter must be a subset of ('png', 'pdf') that includes 'png' "
                         f"(the HTML report embeds PNG). Got {formats!r} instead.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{stem}.png", out / f"{stem}.pdf"
    # constrained layout places everything; the tight box only guards against clipping
    # where fixed-aspect panels overflow the requested height
    box = _solve_layout(fig)
    _atomic_savefig(fig, png, "png", box)
    if "pdf" not in formats:
        return png, None
    with reuse_font_subsets():
        _atomic_savefig(fig, pdf, "pdf", box)
    return png, pdf
