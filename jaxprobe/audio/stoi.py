"""Short-Time Objective Intelligibility (Taal et al. 2011) over a batch of signals.

This wraps ``pystoi`` (numpy/scipy, imported lazily) one pair at a time; it is *not* a JAX
implementation. STOI removes silent frames per signal (a data-dependent length), which a batched
JAX version would have to express with masks; that port, validated against pystoi to 1e-3, is not
done yet. The wrapper gives the batched interface the studies need and keeps ``import jaxprobe`` free
of pystoi.
"""
from __future__ import annotations

import numpy as np

from jaxprobe._validate import check_finite, check_int


def stoi(clean, degraded, *, sample_rate: int = 16000, extended: bool = False) -> np.ndarray:
    """STOI (or extended STOI) of ``degraded`` against ``clean``.

    Parameters
    ----------
    clean, degraded : arrays of shape (..., L)
        Time-aligned waveforms, same shape; leading axes are batch axes.
    sample_rate : int
        Their sample rate (pystoi resamples to 10 kHz internally).
    extended : bool
        ESTOI (Jensen & Taal 2016) instead of STOI.

    Returns
    -------
    numpy array of shape (...), float64, in [-1, 1] (typically [0, 1]).
    """
    fn = "stoi"
    from pystoi import stoi as _pystoi

    sample_rate = check_int(sample_rate, "sample_rate", fn=fn, low=1)
    c = np.asarray(clean, dtype=np.float64)
    d = np.asarray(degraded, dtype=np.float64)
    if c.shape != d.shape or c.ndim < 1:
        raise ValueError(f"The 'clean' and 'degraded' parameters of {fn} must have the same shape (..., L); "
                         f"got {c.shape} and {d.shape}. Trim or pad them to a common length first.")
    check_finite(c, "clean", fn=fn)
    check_finite(d, "degraded", fn=fn)
    flat_c = c.reshape(-1, c.shape[-1])
    flat_d = d.reshape(-1, d.shape[-1])
    out = np.empty(flat_c.shape[0])
    for i in range(flat_c.shape[0]):
        if not np.any(flat_c[i]):
            raise ValueError(f"clean[{i}] of {fn} (flattened batch index) is silent; STOI is undefined for it.")
        out[i] = _pystoi(flat_c[i], flat_d[i], sample_rate, extended=extended)
    return out.reshape(c.shape[:-1])
