"""Wide-band PESQ (ITU-T P.862.2) of reconstructions against clean references, by the ``pesq``
package (the ITU reference C code), one pair at a time on the host, or spread over worker
processes (:func:`pesq_pool`, :func:`wideband_pesq_async`).

PESQ cannot score every pair: the reference C code refuses a reference with no speech-like
activity (silence, ``NoUtterancesError``) and signals shorter than about a quarter second
(``BufferTooShortError``). :func:`wideband_pesq` never turns such a pair into a number: it
returns NaN for it and names the reason, so a caller reports how many items it excluded.
"""
from __future__ import annotations

import contextlib
import warnings
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


def _checked(reference, degraded, fs: int, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """(n, L) arrays of the caller's values and dtype, validated as :func:`wideband_pesq` documents."""
    if fs != SAMPLE_RATE:
        raise ValueError(f"The 'fs' parameter of {fn} must be {SAMPLE_RATE} (wide-band PESQ); got {fs!r}.")
    as_float_array(reference, "reference", fn=fn), as_float_array(degraded, "degraded", fn=fn)  # type checks
    ref, deg = np.asarray(reference), np.asarray(degraded)
    if ref.ndim == 1:
        ref, deg = ref[None], deg[None] if deg.ndim == 1 else deg
    if ref.ndim != 2 or ref.shape != deg.shape or ref.shape[1] == 0:
        raise ValueError(f"The 'reference' and 'degraded' parameters of {fn} must have the same shape (n, L) or (L,), "
                         f"L > 0; got {tuple(np.shape(reference))} and {tuple(np.shape(degraded))}.")
    check_finite(ref, "reference", fn=fn)
    check_finite(deg, "degraded", fn=fn)
    return ref, deg


def _score_rows(fs: int, ref: np.ndarray, deg: np.ndarray, first: int = 0) -> tuple[np.ndarray, dict]:
    """PESQ of every row pair (the C code reads float64: the conversion is exact), failures keyed
    by ``first`` + row. The one scoring loop of both paths: in this process and in a pool's workers."""
    from pesq import PesqError, pesq

    ref, deg = np.asarray(ref, np.float64), np.asarray(deg, np.float64)
    scores = np.full(ref.shape[0], np.nan)
    failures = {}
    for i in range(ref.shape[0]):
        try:
            scores[i] = pesq(fs, ref[i], deg[i], "wb")
        except PesqError as exc:  # silence, too short: excluded and named, never a number
            failures[first + i] = f"{type(exc).__name__}: {exc}"
        except ValueError as exc:  # pesq 0.0.4 fails this way on a silent degraded signal (its error code is NaN)
            failures[first + i] = f"{type(exc).__name__} from the pesq package (a silent degraded signal?): {exc}"
    return scores, failures


def wideband_pesq(reference, degraded, fs: int = SAMPLE_RATE, *, pool=None) -> PesqResult:
    """Wide-band PESQ of each degraded waveform against its reference.

    Parameters
    ----------
    reference, degraded : arrays of shape (n, L) (or (L,) for one pair) at ``fs`` = 16000 Hz.
    pool : an executor from :func:`pesq_pool` to score the pairs in its worker processes (the
        same numbers: each pair is scored by the same C call); None: one pair at a time here.

    Returns
    -------
    PesqResult: scores (n,) (about 1.0 to 4.64; NaN where the pair cannot be scored) and the
    reason for every NaN.
    """
    if pool is not None:
        return wideband_pesq_async(reference, degraded, pool, fs).result()
    ref, deg = _checked(reference, degraded, fs, "wideband_pesq")
    return PesqResult(*_score_rows(fs, ref, deg))


class PendingPesq:
    """The pairs of one :func:`wideband_pesq_async` call being scored; :meth:`result` waits for them."""

    def __init__(self, fs: int, chunks: list, n: int):
        self._fs, self._chunks, self._n = fs, chunks, n  # chunks: (first row, future or None, ref, deg)

    def done(self) -> bool:
        return all(f is None or f.done() for _, f, _, _ in self._chunks)

    def result(self) -> PesqResult:
        from concurrent.futures.process import BrokenProcessPool

        scores = np.full(self._n, np.nan)
        failures: dict = {}
        for start, f, ref, deg in self._chunks:
            try:
                if f is None:
                    raise BrokenProcessPool("the pool was already broken when these pairs were submitted")
                s, fail = f.result()
            except BrokenProcessPool as exc:  # a worker died: the same numbers from this process, said aloud
                warnings.warn(f"wideband_pesq: the worker processes failed ({exc}); scoring rows {start}-"
                              f"{start + len(ref) - 1} in this process instead", RuntimeWarning, stacklevel=2)
                s, fail = _score_rows(self._fs, ref, deg, start)
            scores[start:start + s.size] = s
            failures.update(fail)
        return PesqResult(scores, dict(sorted(failures.items())))


def wideband_pesq_async(reference, degraded, pool, fs: int = SAMPLE_RATE) -> PendingPesq:
    """:func:`wideband_pesq` on the worker processes of ``pool`` (:func:`pesq_pool`), returning at
    once: the arguments are checked here (the same errors), the pairs are sent in a few chunks per
    worker, and ``.result()`` gives the PesqResult, equal to the one-process path's (if the pool
    breaks, a worker killed say, the rows it had are scored in this process, with a warning)."""
    from concurrent.futures.process import BrokenProcessPool

    ref, deg = _checked(reference, degraded, fs, "wideband_pesq")
    n = ref.shape[0]
    size = max(1, -(-n // (4 * max(getattr(pool, "_max_workers", 1), 1))))  # ~4 chunks per worker: balanced
    chunks = []
    for s in range(0, n, size):
        r, d = ref[s:s + size], deg[s:s + size]
        try:
            f = pool.submit(_score_rows, fs, r, d, s)
        except BrokenProcessPool:
            f = None
        chunks.append((s, f, r, d))
    return PendingPesq(fs, chunks, n)


@contextlib.contextmanager
def pesq_pool(workers: int):
    """An executor of ``workers`` spawned processes for :func:`wideband_pesq` (``pool=``) and
    :func:`wideband_pesq_async`, or None for ``workers`` <= 1 (score in this process). Spawned,
    not forked: the caller may hold JAX's and torch's threads. Processes start at the first
    submission, so an unused pool costs nothing; they are shut down on leaving the block."""
    if int(workers) <= 1:
        yield None
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=int(workers), mp_context=mp.get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
