"""Mel filterbanks, (log-)mel spectrograms and their inversion to linear magnitudes.

The filterbank is ``torchaudio.functional.melscale_fbanks`` (same ``htk`` / ``slaney`` scales and
``norm`` options), computed in float64 numpy. Spectrogram axes follow jaxprobe: ``(..., T, n_freqs)``
and ``(..., T, n_mels)`` (torchaudio puts frequency before time).

Mel -> linear inverts ``M = S @ fb`` per frame (``fb``: (n_freqs, n_mels), fewer mels than bins, so the
system is under-determined):

* ``"pinv"``: minimum-norm least squares ``S = relu(M @ pinv(fb))`` — what torchaudio's
  ``InverseMelScale`` (2.9: ``relu(torch.linalg.lstsq(fb.T, M))``) returns when ``fb`` has full rank;
* ``"nnls"``: non-negative least squares ``min ||S fb - M||^2, S >= 0`` by accelerated projected
  gradient (FISTA), started from the ``"pinv"`` solution; every frame is solved at once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe._validate import as_float_array, check_choice, check_finite, check_int, check_positive
from jaxprobe.audio._stft import stft


def hz_to_mel(f, mel_scale: str = "htk"):
    """Hz -> mel on the HTK or Slaney scale (numpy, float64)."""
    f = np.asarray(f, dtype=np.float64)
    if mel_scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    check_choice(mel_scale, "mel_scale", ("htk", "slaney"), fn="hz_to_mel")
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-30) / min_log_hz) / logstep, f / f_sp)


def mel_to_hz(m, mel_scale: str = "htk"):
    """mel -> Hz, the inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    check_choice(mel_scale, "mel_scale", ("htk", "slaney"), fn="mel_to_hz")
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int, *,
                   norm: str | None = None, mel_scale: str = "htk") -> np.ndarray:
    """Triangular mel filterbank, as ``torchaudio.functional.melscale_fbanks``.

    Returns
    -------
    fb : numpy array of shape (n_freqs, n_mels), float64; ``S @ fb`` maps a (..., n_freqs)
    spectrogram to mel bands.
    """
    fn = "mel_filterbank"
    n_freqs = check_int(n_freqs, "n_freqs", fn=fn, low=2)
    n_mels = check_int(n_mels, "n_mels", fn=fn, low=1)
    check_choice(norm, "norm", (None, "slaney"), fn=fn)
    check_choice(mel_scale, "mel_scale", ("htk", "slaney"), fn=fn)
    if not 0 <= f_min < f_max:
        raise ValueError(f"{fn} needs 0 <= f_min < f_max; got f_min={f_min}, f_max={f_max}.")
    all_freqs = np.linspace(0, sample_rate // 2, n_freqs)
    m_pts = np.linspace(hz_to_mel(f_min, mel_scale), hz_to_mel(f_max, mel_scale), n_mels + 2)
    f_pts = mel_to_hz(m_pts, mel_scale)
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    if norm == "slaney":
        fb = fb * (2.0 / (f_pts[2: n_mels + 2] - f_pts[:n_mels]))[None, :]
    return fb


@dataclass(frozen=True)
class MelConfig:
    """The log-mel front end shared by the recognisers and the probes' listening side.

    ``torchaudio.transforms.MelSpectrogram(**cfg.torchaudio_kwargs())`` followed by
    ``torch.log(mel + cfg.log_offset)`` computes the same log-mel as :func:`log_mel_spectrogram`.
    Defaults: 16 kHz, 25 ms Hann window, 10 ms hop, 80 HTK mels 0-8 kHz, power spectrum.
    """

    sample_rate: int = 16000
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None
    power: float = 2.0
    norm: str | None = None
    mel_scale: str = "htk"
    log_offset: float = 1e-6

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def filterbank(self) -> np.ndarray:
        """(n_freqs, n_mels) float64."""
        f_max = self.sample_rate / 2 if self.f_max is None else self.f_max
        return mel_filterbank(self.n_freqs, self.f_min, f_max, self.n_mels, self.sample_rate,
                              norm=self.norm, mel_scale=self.mel_scale)

    @classmethod
    def from_settings(cls, settings: dict) -> "MelConfig":
        """From a front end's settings dict (e.g. ``torch_bridge``'s ``AsrConfig.mel_settings()``):
        the ``MelConfig`` field names, plus ``log`` (only ``"natural"`` is supported) and
        ``log_floor`` (an alias of ``log_offset``). Unknown keys are an error."""
        d = dict(settings)
        log = d.pop("log", "natural")
        if log != "natural":
            raise ValueError(f"MelConfig.from_settings supports natural-log features only; got log={log!r}.")
        if "log_floor" in d:
            d["log_offset"] = d.pop("log_floor")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"MelConfig.from_settings got unknown setting(s) {unknown}; known: {sorted(names)}.")
        return cls(**d)

    def torchaudio_kwargs(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("log_offset")
        return d


def mel_spectrogram(x, cfg: MelConfig = MelConfig()):
    """Mel spectrogram ``|stft(x)|**power @ fb``: (..., L) -> (..., T, n_mels)."""
    x = as_float_array(x, "x", fn="mel_spectrogram")
    S = stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length)
    fb = jnp.asarray(cfg.filterbank(), x.dtype)
    return (jnp.abs(S) ** cfg.power) @ fb


def log_mel_spectrogram(x, cfg: MelConfig = MelConfig()):
    """``log(mel_spectrogram(x) + log_offset)``: (..., L) -> (..., T, n_mels)."""
    return jnp.log(mel_spectrogram(x, cfg) + cfg.log_offset)


def mel_from_log(logmel, cfg: MelConfig = MelConfig()):
    """Undo the log of :func:`log_mel_spectrogram` (clamped at 0): (..., T, n_mels) -> same."""
    return jnp.maximum(jnp.exp(jnp.asarray(logmel)) - cfg.log_offset, 0.0)


def mel_to_linear(mel, fb, *, method: str = "pinv", n_iter: int = 200, rcond: float = 1e-5):
    """Linear-frequency spectrogram whose mel projection best matches ``mel``.

    Parameters
    ----------
    mel : array of shape (..., T, n_mels)
        Mel spectrogram on the *linear* (not log) scale, the same power as the wanted output.
    fb : array of shape (n_freqs, n_mels)
        The filterbank that made ``mel`` (e.g. ``MelConfig.filterbank()``).
    method : {"pinv", "nnls"}
        Minimum-norm least squares clipped at 0, or non-negative least squares (projected gradient,
        ``n_iter`` FISTA iterations from the clipped pseudo-inverse).
    rcond : float
        Singular values of ``fb`` below ``rcond`` times the largest are dropped from the
        pseudo-inverse. The default 80-band HTK bank at ``n_fft=400`` has a nearly empty filter
        (singular value ~5e-7); keeping it amplifies noise a million-fold. torchaudio's float32
        ``lstsq(driver="gelsd")`` drops it the same way (its cut-off is ~2.4e-5).

    Returns
    -------
    array of shape (..., T, n_freqs), non-negative, the dtype of ``mel``.
    """
    fn = "mel_to_linear"
    check_choice(method, "method", ("pinv", "nnls"), fn=fn)
    n_iter = check_int(n_iter, "n_iter", fn=fn, low=1)
    check_positive(rcond, "rcond", fn=fn)
    mel = as_float_array(mel, "mel", fn=fn, min_ndim=2)
    check_finite(mel, "mel", fn=fn)
    fb = np.asarray(fb, dtype=np.float64)
    check_finite(fb, "fb", fn=fn)
    if fb.ndim != 2 or fb.shape[1] != mel.shape[-1]:
        raise ValueError(f"The 'fb' parameter of {fn} must have shape (n_freqs, {mel.shape[-1]}) to match "
                         f"mel's {mel.shape[-1]} bands; got {fb.shape}.")
    pinv, lip = _pinv_and_lipschitz(fb.tobytes(), fb.shape, float(rcond))
    dt = mel.dtype
    return _mel_to_linear(mel, jnp.asarray(fb, dt), jnp.asarray(pinv, dt), lip, method, n_iter)


@lru_cache(maxsize=8)
def _pinv_and_lipschitz(fb_bytes: bytes, shape: tuple, rcond: float) -> tuple[np.ndarray, float]:
    """The filterbank's pseudo-inverse (n_mels, n_freqs) and squared spectral norm, computed once
    per filterbank (two SVDs: a listening stage inverts every layer's mels with the same bank)."""
    fb = np.frombuffer(fb_bytes, np.float64).reshape(shape)
    pinv = np.linalg.pinv(fb, rcond=rcond)
    pinv.flags.writeable = False
    return pinv, float(np.linalg.norm(fb, 2) ** 2)


@partial(jax.jit, static_argnums=(3, 4, 5))
def _mel_to_linear(mel, fb, pinv, lip, method, n_iter):
    s0 = jax.nn.relu(mel @ pinv)
    if method == "pinv":
        return s0
    step = 1.0 / lip

    def body(_, c):
        s, z, t = c
        s_new = jax.nn.relu(z - step * ((z @ fb - mel) @ fb.T))
        t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        z_new = s_new + ((t - 1.0) / t_new) * (s_new - s)
        return s_new, z_new, t_new

    s, _, _ = jax.lax.fori_loop(0, n_iter, body, (s0, s0, jnp.asarray(1.0, mel.dtype)))
    return s
