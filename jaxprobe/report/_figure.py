"""The record of a rendered figure, the file formats, and the block axis that every figure module
shares (``figures.py``, ``quality_figures.py``); kept apart so those modules do not import each other."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxprobe.report import _results as R

__all__ = ["FORMATS", "Figure", "block_axis"]

FORMATS = ("png", "pdf")


@dataclass(frozen=True)
class Figure:
    """One rendered figure: a key, its files and the caption the report prints under it."""

    key: str
    title: str
    png: Path
    pdf: Path | None  # None when PDF was not asked for
    caption: str


def block_axis(ax, lays, *, top_labels=True, minor_index=True, lines=True):
    """Tick every layer by its index in its block, draw block boundaries and block names."""
    x = np.arange(len(lays))
    ax.set_xlim(-0.5, len(lays) - 0.5)
    if minor_index:
        ax.set_xticks(x, [str(layer.index) for layer in lays])
    for b, (name, group) in enumerate(R.blocks(lays)):
        lo, hi = group[0].depth - 0.5, group[-1].depth + 0.5
        if lines and b > 0:
            ax.axvline(lo, color="0.35", lw=0.7, ls="--", zorder=0.5)
        if top_labels:
            ax.text((lo + hi) / 2, 1.01, name, transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=8, fontweight="bold")
