"""Short-time Fourier transform and its inverse in JAX, with ``torch.stft`` / ``torch.istft``
conventions: periodic Hann window of ``win_length`` centred in ``n_fft``, ``center=True`` with
reflect padding of ``n_fft // 2``, one-sided, unnormalised; the inverse divides the overlap-added
frames by the overlap-added squared window.

Axis convention (jaxprobe's): frames on axis -2, frequency bins on axis -1, i.e. a spectrogram is
``(..., T, n_fft // 2 + 1)`` (``torch.stft`` returns the transpose, ``(..., freq, T)``).
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe._validate import as_float_array, check_int


def hann_window(win_length: int, n_fft: int | None = None, *, dtype=np.float64) -> np.ndarray:
    """Periodic Hann window of ``win_length`` (as ``torch.hann_window``), zero-padded to ``n_fft``
    in the centre (as ``torch.stft`` does). Returns a numpy array of shape (n_fft,)."""
    n_fft = win_length if n_fft is None else n_fft
    n = np.arange(win_length)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    out = np.zeros(n_fft)
    out[left: left + win_length] = w
    return out.astype(dtype)


def check_frames(n_fft, hop_length, win_length, fn):
    n_fft = check_int(n_fft, "n_fft", fn=fn, low=2)
    hop_length = check_int(hop_length, "hop_length", fn=fn, low=1)
    win_length = n_fft if win_length is None else check_int(win_length, "win_length", fn=fn, low=1, high=n_fft)
    return n_fft, hop_length, win_length


def make_window(window, n_fft, win_length, fn):
    if window is None:
        return hann_window(win_length, n_fft)
    w = np.asarray(window, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] not in (win_length, n_fft):
        raise ValueError(f"The 'window' parameter of {fn} must have shape ({win_length},) or ({n_fft},); "
                         f"got {w.shape}.")
    if w.shape[0] < n_fft:
        left = (n_fft - win_length) // 2
        w = np.pad(w, (left, n_fft - win_length - left))
    return w


def stft(x, *, n_fft: int = 400, hop_length: int = 160, win_length: int | None = None, window=None,
         center: bool = True):
    """Complex STFT.

    Parameters
    ----------
    x : array of shape (..., L)
        Waveforms.
    n_fft, hop_length, win_length : int
        As ``torch.stft``; ``win_length`` defaults to ``n_fft``.
    window : array of shape (win_length,) or (n_fft,), optional
        Default: periodic Hann.
    center : bool
        Reflect-pad ``n_fft // 2`` samples on both sides (requires ``L > n_fft // 2``).

    Returns
    -------
    array of shape (..., T, n_fft // 2 + 1), complex; ``T = 1 + L // hop_length`` when centred.
    """
    fn = "stft"
    n_fft, hop_length, win_length = check_frames(n_fft, hop_length, win_length, fn)
    x = as_float_array(x, "x", fn=fn, min_ndim=1)
    if center and x.shape[-1] <= n_fft // 2:
        raise ValueError(f"The 'x' parameter of {fn} must be longer than n_fft // 2 = {n_fft // 2} samples "
                         f"for reflect padding; got {x.shape[-1]}.")
    if not center and x.shape[-1] < n_fft:
        raise ValueError(f"The 'x' parameter of {fn} must have at least n_fft = {n_fft} samples; got {x.shape[-1]}.")
    w = jnp.asarray(make_window(window, n_fft, win_length, fn), x.dtype)
    return _stft(x, w, n_fft, hop_length, center)


@partial(jax.jit, static_argnums=(2, 3, 4))
def _stft(x, w, n_fft, hop, center):
    if center:
        pad = [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)]
        x = jnp.pad(x, pad, mode="reflect")
    n_frames = 1 + (x.shape[-1] - n_fft) // hop
    idx = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]
    frames = x[..., idx] * w
    return jnp.fft.rfft(frames, n=n_fft, axis=-1)


def overlap_add(frames, hop):
    """frames (..., T, n) -> (..., n + hop * (T - 1)) by overlap-add, without a scatter."""
    T, n = frames.shape[-2:]
    k = math.ceil(n / hop)
    frames = jnp.pad(frames, [(0, 0)] * (frames.ndim - 1) + [(0, k * hop - n)])
    frames = frames.reshape(*frames.shape[:-1], k, hop)
    out = 0
    for j in range(k):
        pad = [(0, 0)] * (frames.ndim - 3) + [(j, k - 1 - j), (0, 0)]
        out = out + jnp.pad(frames[..., j, :], pad)
    out = out.reshape(*out.shape[:-2], (T + k - 1) * hop)
    return out[..., : n + hop * (T - 1)]


def _envelope(w: np.ndarray, hop: int, n_frames: int) -> np.ndarray:
    n = w.shape[0]
    env = np.zeros(n + hop * (n_frames - 1))
    for t in range(n_frames):
        env[t * hop: t * hop + n] += w * w
    return env


def _trim(n_fft, hop, n_frames, center, length):
    total = n_fft + hop * (n_frames - 1)
    start = n_fft // 2 if center else 0
    end = (total - n_fft // 2 if center else total) if length is None else start + length
    return start, end, total


def istft(S, *, n_fft: int = 400, hop_length: int = 160, win_length: int | None = None, window=None,
          center: bool = True, length: int | None = None):
    """Inverse of :func:`stft` (least-squares overlap-add, as ``torch.istft``).

    Parameters
    ----------
    S : complex array of shape (..., T, n_fft // 2 + 1)
    length : int, optional
        Output length (trimmed or zero-padded); default ``hop_length * (T - 1)`` when centred.

    Returns
    -------
    array of shape (..., length), real.
    """
    fn = "istft"
    n_fft, hop_length, win_length = check_frames(n_fft, hop_length, win_length, fn)
    S = jnp.asarray(S)
    if S.ndim < 2 or S.shape[-1] != n_fft // 2 + 1:
        raise ValueError(f"The 'S' parameter of {fn} must have shape (..., T, {n_fft // 2 + 1}) for n_fft = "
                         f"{n_fft}; got {tuple(S.shape)}.")
    if length is not None:
        length = check_int(length, "length", fn=fn, low=1)
    w = make_window(window, n_fft, win_length, fn)
    start, end, total = _trim(n_fft, hop_length, S.shape[-2], center, length)
    env = _envelope(w, hop_length, S.shape[-2])[start: min(end, total)]
    if np.any(np.abs(env) < 1e-11):
        raise ValueError(f"{fn}: the window envelope is zero somewhere (window / hop_length {hop_length} do "
                         "not satisfy the non-zero overlap-add condition); use a smaller hop_length.")
    real = jnp.real(S).dtype
    return istft_frames(S, jnp.asarray(w, real), n_fft, hop_length, center, length)


@partial(jax.jit, static_argnums=(2, 3, 4, 5))
def istft_frames(S, w, n_fft, hop, center, length):
    n_frames = S.shape[-2]
    frames = jnp.fft.irfft(S, n=n_fft, axis=-1) * w
    y = overlap_add(frames, hop)
    env = overlap_add(jnp.broadcast_to(w * w, (n_frames, n_fft)), hop)
    start, end, total = _trim(n_fft, hop, n_frames, center, length)
    y = y[..., start: min(end, total)] / env[start: min(end, total)]
    if end > total:
        y = jnp.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, end - total)])
    return y
