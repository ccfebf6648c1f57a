"""Griffin-Lim phase reconstruction in JAX (Griffin & Lim 1984), with the "fast" momentum of
Perraudin et al. 2013 exactly as ``torchaudio.functional.griffinlim`` applies it, batched over any
leading axes, and the mel -> waveform chain used to listen to a probe's output.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe._validate import as_float_array, check_choice, check_int, check_positive
from jaxprobe.audio.mel import MelConfig, mel_from_log, mel_to_linear
from jaxprobe.audio._stft import check_frames, istft_frames, _stft, make_window, istft


def griffin_lim(spec, *, n_fft: int = 400, hop_length: int = 160, win_length: int | None = None, window=None,
                power: float = 1.0, n_iter: int = 32, momentum: float = 0.99, length: int | None = None,
                init: str = "zeros", key=None):
    """Waveform whose STFT magnitude approximates ``spec``.

    Parameters
    ----------
    spec : array of shape (..., T, n_fft // 2 + 1)
        Magnitude (``power=1``) or power (``power=2``) spectrogram, frames on axis -2.
    n_fft, hop_length, win_length, window
        The STFT that made ``spec`` (as :func:`jaxprobe.audio.stft`).
    n_iter : int
        Iterations (>= 1; 32 by default, as torchaudio).
    momentum : float in [0, 1)
        Fast Griffin-Lim momentum; 0 gives the original algorithm.
    length : int, optional
        Output length; default ``hop_length * (T - 1)``.
    init : {"zeros", "random"}
        Initial phase: zero (all-ones complex, torchaudio's ``rand_init=False``), or random like
        torchaudio's ``rand_init=True`` (real and imaginary parts uniform in [0, 1)), which needs ``key``.

    Returns
    -------
    array of shape (..., length), the real dtype of ``spec``.
    """
    fn = "griffin_lim"
    n_fft, hop_length, win_length = check_frames(n_fft, hop_length, win_length, fn)
    spec = as_float_array(spec, "spec", fn=fn, min_ndim=2)
    if spec.shape[-1] != n_fft // 2 + 1:
        raise ValueError(f"The 'spec' parameter of {fn} must have shape (..., T, {n_fft // 2 + 1}) for n_fft = "
                         f"{n_fft}; got {tuple(spec.shape)}. Frames go on axis -2 (transpose torchaudio's layout).")
    n_iter = check_int(n_iter, "n_iter", fn=fn, low=1)
    check_positive(power, "power", fn=fn)
    if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
        raise ValueError(f"The 'momentum' parameter of {fn} must be a float in [0, 1). Got {momentum!r} instead.")
    check_choice(init, "init", ("zeros", "random"), fn=fn)
    if init == "random" and key is None:
        raise ValueError(f"{fn} with init='random' needs a PRNG 'key' (e.g. jax.random.key(0)).")
    if np.any(np.asarray(spec) < 0):
        raise ValueError(f"The 'spec' parameter of {fn} must be non-negative (a magnitude or power spectrogram).")
    if length is not None:
        length = check_int(length, "length", fn=fn, low=1)
    w = jnp.asarray(make_window(window, n_fft, win_length, fn), spec.dtype)
    istft(jnp.zeros(spec.shape[-2:], jnp.complex64), n_fft=n_fft, hop_length=hop_length,
          window=np.asarray(w), length=length)  # validates the window envelope once
    mag = spec ** (1.0 / power)
    if init == "zeros":
        angles = jnp.ones(mag.shape, jnp.result_type(mag.dtype, jnp.complex64))
    else:
        kr, ki = jax.random.split(key)
        angles = jax.random.uniform(kr, mag.shape, mag.dtype) + 1j * jax.random.uniform(ki, mag.shape, mag.dtype)
    return _griffin_lim(mag, angles, w, n_fft, hop_length, n_iter, float(momentum), length)


@partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _griffin_lim(mag, angles, w, n_fft, hop, n_iter, momentum, length):
    m = momentum / (1.0 + momentum)

    def body(_, c):
        angles, tprev = c
        inverse = istft_frames(mag * angles, w, n_fft, hop, True, length)
        rebuilt = _stft(inverse, w, n_fft, hop, True)
        if rebuilt.shape[-2] != mag.shape[-2]:  # a 'length' that changes the frame count
            raise ValueError(f"griffin_lim: length={length} gives {rebuilt.shape[-2]} frames, not {mag.shape[-2]}.")
        new = rebuilt - m * tprev if momentum else rebuilt
        new = new / (jnp.abs(new) + 1e-16)
        return new, rebuilt

    angles, _ = jax.lax.fori_loop(0, n_iter, body, (angles, jnp.zeros_like(angles)))
    return istft_frames(mag * angles, w, n_fft, hop, True, length)


def spectral_convergence(x, spec, *, n_fft: int = 400, hop_length: int = 160, win_length: int | None = None,
                         power: float = 1.0):
    """``|| |stft(x)| - mag ||_F / || mag ||_F`` per item: x (..., L), spec (..., T, n_freqs) -> (...)."""
    from jaxprobe.audio._stft import stft

    spec = jnp.asarray(spec)
    if spec.ndim < 2 or spec.shape[-1] != n_fft // 2 + 1:
        raise ValueError(f"The 'spec' parameter of spectral_convergence must have shape (..., T, {n_fft // 2 + 1}) "
                         f"for n_fft = {n_fft}; got {tuple(spec.shape)}. Pass the n_fft that made it.")
    X = jnp.abs(stft(x, n_fft=n_fft, hop_length=hop_length, win_length=win_length))
    mag = spec ** (1.0 / power)
    T = min(X.shape[-2], mag.shape[-2])
    d = X[..., :T, :] - mag[..., :T, :]
    return jnp.sqrt(jnp.sum(d * d, axis=(-2, -1)) / jnp.sum(mag * mag, axis=(-2, -1)))


def mel_to_waveform(logmel, cfg: MelConfig = MelConfig(), *, method: str = "pinv", n_iter: int = 32,
                    momentum: float = 0.99, length: int | None = None, nnls_iter: int = 200,
                    init: str = "zeros", key=None):
    """Listen to log-mel frames: exp -> mel-to-linear -> Griffin-Lim.

    Parameters
    ----------
    logmel : array of shape (..., T, n_mels)
        Log-mel frames as :func:`jaxprobe.audio.mel.log_mel_spectrogram` makes them (e.g. a probe's output).
    cfg : MelConfig
    method : {"pinv", "nnls"}
        Mel -> linear inversion (see :func:`jaxprobe.audio.mel.mel_to_linear`).

    Returns
    -------
    array of shape (..., length), default length ``hop_length * (T - 1)``.
    """
    logmel = as_float_array(logmel, "logmel", fn="mel_to_waveform", min_ndim=2)
    if logmel.shape[-1] != cfg.n_mels:
        raise ValueError(f"The 'logmel' parameter of mel_to_waveform must have {cfg.n_mels} mel bins on axis -1 "
                         f"(cfg.n_mels); got shape {tuple(logmel.shape)}.")
    mel = mel_from_log(logmel, cfg)
    lin = mel_to_linear(mel, cfg.filterbank(), method=method, n_iter=nnls_iter)
    return griffin_lim(lin, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                       power=cfg.power, n_iter=n_iter, momentum=momentum, length=length, init=init, key=key)
