"""How the report saves a figure (``jaxprobe.report._style.save``): the layout solved once for both
files, the PNG byte for byte what matplotlib's own ``savefig(bbox_inches="tight")`` writes, the
PDF on the PNG's box, and the PDF fonts (kept subsets without the tables a viewer never reads)
holding the font file's own outlines and widths."""
from __future__ import annotations

import re
import zlib
from io import BytesIO

import numpy as np
import pytest
from fontTools.ttLib import TTFont
from matplotlib.font_manager import FontProperties, findfont
from matplotlib.image import imread

from jaxprobe.report import _pdf_fonts
from jaxprobe.report._style import DPI, PAD_INCHES, new_figure, save, style

TEXT = "Kappa 0.25 (dB) −3 ×10²"


def _busy_figure(title: str = "Encoder"):
    """Constrained layout with what the report uses: a shared-axes grid, a fixed-aspect panel
    with a colour bar, bold titles, rotated ticks and a legend outside the axes."""
    with style():
        fig = new_figure(7.0, 3.2)
        axes = fig.subplots(1, 3)
        x = np.linspace(-10, 30, 9)
        axes[0].plot(x, np.tanh(x / 20), "o-", label="layer 0")
        axes[0].fill_between(x, np.tanh(x / 20) - 0.1, np.tanh(x / 20) + 0.1, alpha=0.2, lw=0)
        axes[0].set_title(title, fontweight="bold")
        axes[0].set_xlabel("Input SNR (dB)")
        m = axes[1].pcolormesh(np.arange(6), np.arange(6), np.outer(np.arange(5), np.arange(5)),
                               rasterized=True)
        axes[1].set_aspect("equal")
        fig.colorbar(m, ax=axes[1], label="Diffusion distance (×10$^{-3}$)")
        axes[2].imshow(np.eye(4), cmap="magma_r")
        axes[2].set_xticks(range(4), ["Enc.0", "Enc.1", "Dec.0", "Dec.1"], rotation=90)
        axes[2].text(1, 1, TEXT, fontsize=6)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center")
    return fig


def _save(fig, out_dir, stem, **kwargs):
    with style():  # as the report's figure functions call it
        return save(fig, out_dir, stem, **kwargs)


def _pdf_box_inches(path) -> tuple[float, float]:
    box = re.search(rb"/MediaBox \[([^\]]*)\]", path.read_bytes()).group(1).split()
    return float(box[2]) / 72, float(box[3]) / 72


def _embedded_fonts(path) -> list[TTFont]:
    """The TrueType programs embedded in a PDF (its Flate-compressed streams that hold one)."""
    fonts = []
    for raw in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", path.read_bytes(), re.S):
        try:
            data = zlib.decompress(raw)
        except zlib.error:
            continue
        if data[:4] in (b"\x00\x01\x00\x00", b"true"):
            fonts.append(TTFont(BytesIO(data)))
    return fonts


def test_png_is_byte_for_byte_matplotlibs_tight_save(tmp_path):
    png, _ = _save(_busy_figure(), tmp_path, "ours")
    with style():
        _busy_figure().savefig(tmp_path / "plain.png", dpi=DPI, bbox_inches="tight", pad_inches=PAD_INCHES)
    assert png.read_bytes() == (tmp_path / "plain.png").read_bytes()


def test_pdf_page_is_the_png_box_and_the_layout_is_solved_once(tmp_path, monkeypatch):
    fig = _busy_figure()
    solves = []
    engine = fig.get_layout_engine()
    real = engine.execute
    monkeypatch.setattr(engine, "execute", lambda f: solves.append(1) or real(f))
    png, pdf = _save(fig, tmp_path, "fig")
    assert len(solves) == 1 and fig.get_layout_engine() is None
    h, w = imread(png).shape[:2]
    pw, ph = _pdf_box_inches(pdf)
    assert abs(pw - w / DPI) < 1.5 / DPI and abs(ph - h / DPI) < 1.5 / DPI  # whole pixels vs points


def test_png_only_leaves_no_pdf(tmp_path):
    png, pdf = _save(_busy_figure(), tmp_path, "only", formats=("png",))
    assert pdf is None and png.is_file() and not (tmp_path / "only.pdf").exists()


def test_pdf_fonts_hold_the_font_files_outlines_and_widths(tmp_path):
    _, pdf = _save(_busy_figure(), tmp_path, "fonts")
    fonts = _embedded_fonts(pdf)
    assert len(fonts) >= 2  # regular and bold
    source = {name: TTFont(findfont(FontProperties(family="DejaVu Sans", weight=name)))
              for name in ("normal", "bold")}
    used = set()
    for font in fonts:
        tags = set(font.keys())
        assert {"glyf", "loca", "hmtx", "head", "cmap"} <= tags
        assert not tags & set(_pdf_fonts.UNREAD_TABLES), "tables no PDF viewer reads are left out"
        family = "bold" if "Bold" in font["name"].getDebugName(4) else "normal"
        ref = source[family]
        names = [n for n in font.getGlyphOrder() if n != ".notdef"]
        assert names
        for name in names:
            ours, theirs = font["glyf"][name], ref["glyf"][name]
            a = ours.getCoordinates(font["glyf"])[0]
            b = theirs.getCoordinates(ref["glyf"])[0]
            assert np.array_equal(np.asarray(a), np.asarray(b)), f"{family} glyph {name!r} outline differs"
            assert font["hmtx"][name][0] == ref["hmtx"][name][0], f"{family} glyph {name!r} width differs"
        used.update(names)
    cmap = source["normal"].getBestCmap()
    assert {cmap[ord(c)] for c in "Kappa(dB)×" if c != " "} <= used  # the figure's text is there


def test_subsets_are_kept_per_glyph_set_and_other_pdfs_are_untouched(tmp_path, monkeypatch):
    calls = []
    real = _pdf_fonts.subset_font
    monkeypatch.setattr(_pdf_fonts, "subset_font", lambda f, g: calls.append((str(f), frozenset(g))) or real(f, g))
    monkeypatch.setattr(_pdf_fonts, "_kept", type(_pdf_fonts._kept)())
    _save(_busy_figure(), tmp_path, "a")
    first = len(calls)
    assert first >= 2 and len(set(calls)) == first
    _save(_busy_figure(), tmp_path, "b")  # same text, same glyphs: every subset reused
    assert len(calls) == first
    _save(_busy_figure(title="Bottleneck"), tmp_path, "c")  # new letters in bold: that font anew
    assert len(calls) == first + 1 and "Bold" in calls[-1][0]
    n = len(calls)
    with style():
        _busy_figure().savefig(tmp_path / "someone_else.pdf")  # outside the report's save
    assert len(calls) == n
    assert _embedded_fonts(tmp_path / "someone_else.pdf")[0].get("GSUB") is not None  # matplotlib's own subset


def test_subsetter_falls_back_where_matplotlib_has_no_entry_point(monkeypatch):
    from matplotlib.backends import _backend_pdf_ps

    monkeypatch.delattr(_backend_pdf_ps, "SubsetResults")
    assert _pdf_fonts._install() is False
    with _pdf_fonts.reuse_font_subsets():
        assert _pdf_fonts._on.get() is False


@pytest.mark.parametrize("bad", [("pdf",), ("png", "svg")])
def test_formats_are_checked_before_drawing(tmp_path, bad):
    with pytest.raises(ValueError, match="'formats' parameter"):
        _save(_busy_figure(), tmp_path, "x", formats=bad)
    assert not any(tmp_path.iterdir())
