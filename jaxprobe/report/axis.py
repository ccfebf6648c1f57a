"""The degradation axis a sweep ran on (``results['data']['axis']``: snr, c50, clipping) and
how the report names it. The figure and table code of the SNR study reads each record's
``snr``; :func:`snr_view` gives it the levels of any axis under that name (in memory only,
``results.json`` keeps ``axis``/``level``), and the labels and prose follow the axis."""
from __future__ import annotations

import copy
import re

#: axis -> (name in prose, unit, axis label)
AXES = {"snr": ("SNR", "dB", "Input SNR (dB)"), "c50": ("C50", "dB", "C50 (dB)"),
        "clipping": ("clipping level", "× peak", "Clipping threshold (× peak)")}
_current = ["snr"]


def axis_of(results) -> str:
    a = (results.get("data") or {}).get("axis", "snr")
    return a if a in AXES else "snr"


def set_axis(axis: str) -> None:
    """The axis the figures drawn next are labelled for."""
    _current[0] = axis if axis in AXES else "snr"


def axis_label(short: bool = False) -> str:
    name, unit, label = AXES[_current[0]]
    if _current[0] == "snr" and short:
        return "SNR (dB)"
    return label


def axis_unit() -> str:
    return {"snr": "dB", "c50": "dB", "clipping": "unit of level"}[_current[0]]


def level_text(v: float) -> str:
    name, unit, _ = AXES[_current[0]]
    return f"{v:g} dB" if unit == "dB" else f"{v:g} {unit}"


def snr_view(results: dict) -> dict:
    """``results`` with every CKA record's level under ``snr`` and ``data.snrs`` = the levels."""
    if axis_of(results) == "snr":
        return results
    view = copy.copy(results)
    view["cka"] = [dict(r, snr=r["level"]) if "snr" not in r else r for r in results.get("cka", [])]
    view["data"] = dict(results["data"], snrs=results["data"].get("levels", []))
    return view


def relabel(text: str, axis: str) -> str:
    """Prose written for the SNR axis, reworded for ``axis`` (word "SNR" -> the axis's name)."""
    if axis == "snr":
        return text
    name, unit, label = AXES[axis]
    text = text.replace("Input SNR (dB)", label).replace("input SNRs", f"{name} levels").replace("input SNR", name)
    return re.sub(r"\bSNR(s?)\b", lambda m: name + ("s" if m.group(1) else ""), text)
