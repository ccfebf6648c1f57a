"""Wide-band PESQ (ITU-T P.862.2) of reconstructions against clean references, by the ``pesq``
package (the ITU reference C code), one pair at a time on the host.

PESQ cannot score every pair: the reference C code refuses a reference with no speech-like
activity (silence, ``NoUtterancesError``) and signals shorter than about a quarter second
(``BufferTooShortError``). :func:`wideband_pesq` never turns such a pair into a number: it
returns NaN for it and names the reason, so a caller reports how many items it excluded.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxprobe._validate import as_float_array, check_finite

SAMPLE_RATE = 16000  # wide-band PESQ is defined at 16 kHz


class PesqResult(NamedTuple):
    """``scores``: (n,) float64 MOS-LQO, NaN where PESQ could not be computed; ``failures``:
    {item index: reason} for those items (the pesq package's error class and message)."""

    scores: np.ndarray
    failures: dict

    @property
    def n_excluded(self) -> int:
        return len(self.failures)


def wideband_pesq(reference, degraded, fs: int = SAMPLE_RATE) -> PesqResult:
    """Wide-band PESQ of each degraded waveform against its reference.

    Parameters
    ----------
    reference, degraded : arrays of shape (n, L) (or (L,) for one pair) at ``fs`` = 16000 Hz.

    Returns
    -------
    PesqResult: scores (n,) (about 1.0 to 4.64; NaN where the pair cannot be scored) and the
    reason for every NaN.
    """
    fn = "wideband_pesq"
    if fs != SAMPLE_RATE:
        raise ValueError(f"The 'fs' parameter of {fn} must be {SAMPLE_RATE} (wide-band PESQ); got {fs!r}.")
    as_float_array(reference, "reference", fn=fn), as_float_array(degraded, "degraded", fn=fn)  # type checks
    ref, deg = np.asarray(reference, np.float64), np.asarray(degraded, np.float64)  # the C code reads float64
    if ref.ndim == 1:
        ref, deg = ref[None], deg[None] if deg.ndim == 1 else deg
    if ref.ndim != 2 or ref.shape != deg.shape or ref.shape[1] == 0:
        raise ValueError(f"The 'reference' and 'degraded' parameters of {fn} must have the same shape (n, L) or (L,), "
                         f"L > 0; got {tuple(np.shape(reference))} and {tuple(np.shape(degraded))}.")
    check_finite(ref, "reference", fn=fn)
    check_finite(deg, "degraded", fn=fn)
    from pesq import PesqError, pesq

    scores = np.full(ref.shape[0], np.nan)
    failures = {}
    for i in range(ref.shape[0]):
        try:
            scores[i] = pesq(fs, ref[i], deg[i], "wb")
        except PesqError as exc:  # silence, too short: excluded and named, never a number
            failures[i] = f"{type(exc).__name__}: {exc}"
        except ValueError as exc:  # pesq 0.0.4 fails this way on a silent degraded signal (its error code is NaN)
            failures[i] = f"{type(exc).__name__} from the pesq package (a silent degraded signal?): {exc}"
    return PesqResult(scores, failures)
