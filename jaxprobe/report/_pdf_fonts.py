"""Faster TrueType font subsets for the report's PDFs, the same glyphs on the page.

A PDF written with ``pdf.fonttype: 42`` embeds every font it uses, cut down to the glyphs used
(matplotlib asks fontTools, ~0.12 s a font and file for DejaVu Sans, most of it spent cutting the
OpenType layout tables). Two changes, on while :func:`reuse_font_subsets` is entered, for the
report's own saves only (the wrapper passes every other call to matplotlib unchanged):

- a subset is kept per (font file, face, glyph set) and reused by the next PDF that needs the
  same glyphs (the report's figures share a few glyph sets; its per-estimator variants share
  them all);
- the subset leaves out the tables a PDF viewer never reads: the OpenType layout tables (GSUB,
  GPOS, GDEF, BASE, JSTF, MATH) and ``kern``. In a PDF, glyphs are placed by the content
  stream: matplotlib shapes and kerns the text itself from the full font when it draws, and
  reads only the subset's glyph widths back. Outlines, metrics, hinting, ``cmap``, ``name``
  and ``post`` are kept; ``tests/jaxprobe/test_report_save.py`` checks the embedded outlines
  and widths against the font file.

Should matplotlib's private subsetting entry point (``_backend_pdf_ps.get_glyphs_subset``,
returning ``SubsetResults``) change shape, nothing is wrapped and matplotlib subsets as usual.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections import OrderedDict
from io import BytesIO

__all__ = ["reuse_font_subsets"]

#: tables a PDF viewer does not read from an embedded TrueType font: layout and kerning (the
#: content stream positions every glyph) and font-editor metadata
UNREAD_TABLES = ("GSUB", "GPOS", "GDEF", "BASE", "JSTF", "MATH", "kern", "FFTM", "PfEd", "BDF", "meta")
_MAX_KEPT = 64  # subsets kept (a few kB each), least recently used dropped first

_kept: OrderedDict = OrderedDict()
_lock = threading.Lock()
_on = contextvars.ContextVar("jaxprobe_reuse_font_subsets", default=False)


def subset_font(fontfile, glyphs) -> tuple[bytes, dict]:
    """The TrueType font ``fontfile`` cut down to the glyph indices ``glyphs``: the font file's
    bytes and the map from old to new glyph index."""
    from fontTools import subset

    options = subset.Options(glyph_names=True, recommended_glyphs=True)
    options.drop_tables += [t for t in UNREAD_TABLES if t not in options.drop_tables]
    options.font_number = getattr(fontfile, "face_index", 0)
    font = subset.load_font(fontfile, options)
    try:
        cutter = subset.Subsetter(options=options)
        cutter.populate(gids=set(glyphs))
        cutter.subset(font)
        buf = BytesIO()
        font.save(buf, reorderTables=False)
        return buf.getvalue(), dict(cutter.glyph_index_map)
    finally:
        font.close()


def _install() -> bool:
    """Wrap matplotlib's subsetter once per process; False where its entry point is not there."""
    try:
        from fontTools.ttLib import TTFont
        from matplotlib.backends import _backend_pdf_ps as pdf_ps

        original, results = pdf_ps.get_glyphs_subset, pdf_ps.SubsetResults
        results._as_cm  # noqa: B018 (checked: the context manager matplotlib enters)
    except (ImportError, AttributeError):
        return False
    if getattr(original, "_jaxprobe_reuse", False):
        return True

    def get_glyphs_subset(fontfile, glyphs):
        if not _on.get():
            return original(fontfile, glyphs)
        glyphs = frozenset(glyphs)
        key = (os.fspath(fontfile), getattr(fontfile, "face_index", 0), glyphs)
        with _lock:
            kept = _kept.get(key)
            if kept is not None:
                _kept.move_to_end(key)
        if kept is None:
            kept = subset_font(fontfile, glyphs)
            with _lock:
                _kept[key] = kept
                while len(_kept) > _MAX_KEPT:
                    _kept.popitem(last=False)
        data, index_map = kept
        return results(TTFont(BytesIO(data)), dict(index_map))._as_cm()

    get_glyphs_subset._jaxprobe_reuse = True
    get_glyphs_subset.__wrapped__ = original
    pdf_ps.get_glyphs_subset = get_glyphs_subset
    return True


@contextlib.contextmanager
def reuse_font_subsets():
    """While entered (in this thread or task): PDFs written by matplotlib use the kept, lean
    font subsets described in the module docstring."""
    token = _on.set(_install())
    try:
        yield
    finally:
        _on.reset(token)
