"""The official MUSE inference pipeline around the generator: load, segment, STFT, enhance.

Steps (``shared/muse/muse-architecture.md`` §1), per utterance x of length L at 16 kHz:

1. energy normalisation ``c = sqrt(L / sum(x**2))``, ``x <- c*x`` (float32, before padding);
2. segments of S = 30,700 samples: L < S is zero-padded to one segment; otherwise the
   ``k = L // S`` consecutive segments, plus, when ``r = L % S > 0``, one extra segment made of
   the last S samples, whose output supplies the last r samples;
3. STFT (n_fft 510, hop 100, periodic Hann 510, centred, reflect padding) → ``mag_c = |X|**0.3``
   and ``pha = angle(X)``, both ``(n, 256, 308)``;
4. the generator → ``est_mag_c``, ``est_pha``; iSTFT of ``est_mag_c**(1/0.3) * exp(i est_pha)``;
5. outputs joined, cropped to L and divided by c.

For activation capture, run steps 1–3 yourself (``muse_normalise`` alone gives step 1) and call the model on the segments::

    segs = muse_segments(waveform)                  # MuseSegments(segments=(n, 30700), ...)
    mag_c, pha = muse_forward_inputs(segs.segments)  # two (n, 256, 308) float32 tensors
    with torch.inference_mode():
        est_mag_c, est_pha, _ = model(mag_c, pha)
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from torch_bridge.models.muse.model import MUSE
from torch_bridge.models.muse.layers import MUSE_SAMPLE_RATE, MUSE_WINDOW
from torch_bridge.weights import OFFICIAL_SHA256, resolve_muse_checkpoint

SAMPLE_RATE = MUSE_SAMPLE_RATE
SEGMENT_SIZE = MUSE_WINDOW
N_FFT = 510
HOP_SIZE = 100
WIN_SIZE = 510
COMPRESS_FACTOR = 0.3


# ----------------------------------------------------------------------------- model
def load_muse(
    checkpoint: str | os.PathLike | None = None,
    *,
    sha256: str | None = OFFICIAL_SHA256,
    url: str | None = None,
) -> MUSE:
    """The MUSE generator in eval mode with the official weights loaded strictly.

    Parameters
    ----------
    checkpoint : path, optional
        A ``g_best`` file (``{'generator': state_dict}`` or a bare state dict). Default: the
        ``JAXPROBE_MUSE_CHECKPOINT`` env variable, then the cache, then the verified download
        (see ``torch_bridge.weights``).
    sha256 : str or None
        Expected sha256 of the file (the official one by default); None accepts any file whose
        keys and shapes match, e.g. your own fine-tuned weights.
    url : str, optional
        Download URL override (default ``JAXPROBE_MUSE_URL`` or the pinned official URL).
    """
    path = resolve_muse_checkpoint(checkpoint, url=url, sha256=sha256)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"Could not read the MUSE checkpoint {str(path)!r} as a torch file ({type(exc).__name__}: {exc}). "
            "Expected the official g_best, a torch zip holding {'generator': state_dict}."
        ) from exc
    state = obj.get("generator", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ValueError(
            f"The MUSE checkpoint {str(path)!r} holds a {type(obj).__name__}; expected a dict "
            "{'generator': state_dict} or a state dict."
        )
    model = MUSE()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"The MUSE checkpoint {str(path)!r} does not match the MUSE generator: {exc}") from exc
    return model.eval()


# ----------------------------------------------------------------------------- segments
@dataclass(frozen=True)
class MuseSegments:
    """One utterance cut into model segments.

    Attributes
    ----------
    segments : ndarray of shape (n, 30700), float32
        Energy-normalised segments in order; the last is the tail segment when ``length % S``
        is non-zero and ``length > S``.
    norm_factor : float
        c = sqrt(L / sum(x**2)); the enhanced output is divided by it.
    length : int
        L, the utterance length in samples.
    """

    segments: np.ndarray
    norm_factor: float
    length: int


def _as_waveform(waveform, name: str = "waveform") -> np.ndarray:
    x = waveform.detach().cpu().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
    if x.dtype.kind not in "iuf":
        raise TypeError(f"The '{name}' parameter must hold real numbers; got dtype {x.dtype}.")
    if x.ndim != 1:
        raise ValueError(f"The '{name}' parameter must be a 1-D waveform; got shape {x.shape}.")
    if x.size == 0:
        raise ValueError(f"The '{name}' parameter is empty; give at least one sample.")
    if not np.isfinite(x).all():
        raise ValueError(f"The '{name}' parameter holds NaN or inf; remove them before enhancing.")
    with np.errstate(over="ignore"):
        y = x.astype(np.float32, copy=False)
    if not np.isfinite(y).all():
        raise ValueError(f"The '{name}' parameter holds values up to {float(np.max(np.abs(x))):.3g}, beyond float32's "
                         "range (MUSE runs in float32); rescale the waveform (enhancement normalises its energy anyway).")
    return y


def muse_normalise(waveform) -> tuple[np.ndarray, float]:
    """The official energy normalisation of one utterance, in float32.

    Parameters
    ----------
    waveform : array of shape (L,)

    Returns
    -------
    normalised : float32 ndarray of shape (L,)
        ``c * waveform``, which has unit RMS.
    norm_factor : float
        ``c = sqrt(L / sum(waveform**2))``.
    """
    x = torch.from_numpy(np.ascontiguousarray(_as_waveform(waveform)))
    energy = torch.sum(x**2.0)
    if not bool(torch.any(x != 0)):
        raise ValueError("The 'waveform' parameter is silent (all zeros); MUSE's energy normalisation needs signal.")
    if torch.isfinite(energy) and energy >= torch.finfo(torch.float32).tiny * x.shape[0]:
        c = torch.sqrt(x.shape[0] / energy)  # the official float32 arithmetic
    else:  # the float32 energy overflowed or underflowed (e.g. samples ~1e30 or ~1e-25): float64
        c = torch.sqrt(x.shape[0] / torch.sum(x.double() ** 2.0)).float()
    return (x * c).numpy(), float(c)


def muse_segments(waveform) -> MuseSegments:
    """Normalise the energy of one utterance and cut it into 30,700-sample segments.

    Parameters
    ----------
    waveform : array of shape (L,)
        Mono 16 kHz samples, any L >= 1; computed in float32.

    Returns
    -------
    MuseSegments with ``segments`` of shape (n, 30700), n = max(1, ceil(L / 30700)).
    """
    normalised, c = muse_normalise(waveform)
    x = torch.from_numpy(normalised)
    length = x.shape[0]
    s = SEGMENT_SIZE
    if length < s:
        segs = torch.nn.functional.pad(x, (0, s - length))[None]
    else:
        k, r = divmod(length, s)
        segs = x[: k * s].reshape(k, s)
        if r:
            segs = torch.cat([segs, x[-s:][None]])
    return MuseSegments(segments=segs.numpy(), norm_factor=c, length=length)


def muse_join(outputs, length: int) -> np.ndarray:
    """Join per-segment outputs ``(n, 30700)`` of one utterance into its ``(length,)`` waveform,
    with the tail rule of :func:`muse_segments` (the extra segment supplies the last samples)."""
    outputs = np.asarray(outputs)
    s = SEGMENT_SIZE
    if length <= s:
        return outputs[0, :length]
    k, r = divmod(length, s)
    if r == 0:
        return outputs.reshape(-1)
    return np.concatenate([outputs[:k].reshape(-1)[: (k - 1) * s + r], outputs[k]])


# ----------------------------------------------------------------------------- spectra
def _window() -> torch.Tensor:
    return torch.hann_window(WIN_SIZE)  # periodic


def muse_forward_inputs(segments) -> tuple[torch.Tensor, torch.Tensor]:
    """The model inputs for a batch of normalised segments.

    Parameters
    ----------
    segments : array or tensor of shape (n, 30700)
        From :func:`muse_segments` (several utterances' segments may be stacked). A tensor
        stays on its device (the STFT runs there).

    Returns
    -------
    mag_c, pha : float32 tensors of shape (n, 256, 308)
        ``|STFT|**0.3`` and ``angle(STFT)``, ready for ``model(mag_c, pha)``.
    """
    if isinstance(segments, torch.Tensor):
        x = segments.to(torch.float32)
    else:
        x = torch.as_tensor(np.asarray(segments, dtype=np.float32))
    if x.ndim != 2 or x.shape[1] != SEGMENT_SIZE:
        raise ValueError(
            f"The 'segments' parameter must have shape (n, {SEGMENT_SIZE}); got {tuple(x.shape)}. "
            "Cut waveforms with muse_segments first."
        )
    spec = torch.stft(x, N_FFT, hop_length=HOP_SIZE, win_length=WIN_SIZE, window=_window().to(x.device),
                      center=True, pad_mode="reflect", normalized=False, return_complex=True)
    return spec.abs() ** COMPRESS_FACTOR, spec.angle()


def muse_energy_norm(x: np.ndarray) -> tuple[np.ndarray, dict]:
    """The official inference's first step over the whole mixture (``muse_normalise``: float32,
    as the official code computes it; MUSE is sensitive enough that a 1e-7 relative change of
    its input moves the norm1 means by ~1e-3 relative, so the rounding must match too); the
    dump's ``prepare`` step, with the factor as item metadata."""
    x, c = muse_normalise(x)
    return x, {"muse_norm_factor": c}


def muse_dump_forward(model: torch.nn.Module, batch: torch.Tensor):
    """The dump's forward of a batch of windows (B, 30700): the STFT front end on the CPU, as
    the official code, then the model on its own device."""
    mag_c, pha = muse_forward_inputs(batch)
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    return model(mag_c.to(dev), pha.to(dev))


def muse_reconstruct(est_mag_c: torch.Tensor, est_pha: torch.Tensor) -> torch.Tensor:
    """iSTFT of the model outputs ``(n, 256, T)`` → normalised waveforms ``(n, 100*(T-1))``."""
    mag = est_mag_c ** (1.0 / COMPRESS_FACTOR)
    spec = torch.complex(mag * torch.cos(est_pha), mag * torch.sin(est_pha))
    return torch.istft(spec, N_FFT, hop_length=HOP_SIZE, win_length=WIN_SIZE, window=_window().to(spec.device),
                       center=True)


# ----------------------------------------------------------------------------- enhance
def _resample(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), orig, new).numpy()


def _enhance_16k(model: torch.nn.Module, waves: list[np.ndarray], batch_size: int | None) -> list[np.ndarray]:
    cut = [muse_segments(w) for w in waves]
    segments = np.concatenate([c.segments for c in cut])
    device = next(model.parameters(), torch.empty(0)).device
    if batch_size is None:
        batch_size = 1 if device.type == "cpu" else 8
    outs = []
    with torch.inference_mode():
        for start in range(0, len(segments), batch_size):
            mag_c, pha = muse_forward_inputs(segments[start : start + batch_size])
            est_mag_c, est_pha, _ = model(mag_c.to(device), pha.to(device))
            outs.append(muse_reconstruct(est_mag_c.cpu(), est_pha.cpu()).numpy())
    outs = np.concatenate(outs)
    result, start = [], 0
    for c in cut:
        n = len(c.segments)
        y = muse_join(outs[start : start + n], c.length) / np.float32(c.norm_factor)
        result.append(y.astype(np.float32, copy=False))
        start += n
    return result


def enhance(
    model: torch.nn.Module,
    waveform,
    sample_rate: int = SAMPLE_RATE,
    *,
    batch_size: int | None = None,
):
    """Enhance speech with MUSE, exactly as the official inference does.

    Parameters
    ----------
    model : MUSE
        From :func:`load_muse`.
    waveform : array of shape (L,) or (B, L), or a sequence of 1-D arrays
        Mono waveforms of any length >= 1; a 2-D array or a list is a batch.
    sample_rate : int
        Rate of ``waveform``. Other rates than 16 kHz are resampled to 16 kHz with
        ``torchaudio.functional.resample`` and the output back to ``sample_rate`` (the official
        script resamples with librosa instead, so results then differ slightly from it).
    batch_size : int, optional
        Segments per forward pass. Default 1 on CPU (larger batches are slower per segment
        there: 0.92 s vs 1.7 s per segment at 4, one thread) and 8 on a GPU. Inputs go to the
        device of the model's parameters.

    Returns
    -------
    float32 ndarray of the input's shape, or a list of 1-D arrays for list input.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"The 'sample_rate' parameter of enhance must be a positive int; got {sample_rate!r}.")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
    ):
        raise ValueError(f"The 'batch_size' parameter of enhance must be an int in [1, inf); got {batch_size!r}.")
    is_list = isinstance(waveform, (list, tuple))
    if is_list:
        waves = [_as_waveform(w, f"waveform[{i}]") for i, w in enumerate(waveform)]
    else:
        arr = waveform.detach().cpu().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
        if arr.ndim not in (1, 2):
            raise ValueError(
                f"The 'waveform' parameter of enhance must have shape (L,) or (B, L); got {arr.shape}. "
                "Downmix multichannel audio to mono first."
            )
        waves = [_as_waveform(w) for w in (arr if arr.ndim == 2 else arr[None])]
    lengths = [len(w) for w in waves]
    if sample_rate != SAMPLE_RATE:
        waves = [_resample(w, sample_rate, SAMPLE_RATE) for w in waves]
    out = _enhance_16k(model, waves, None if batch_size is None else int(batch_size))
    if sample_rate != SAMPLE_RATE:
        out = [_fit(_resample(y, SAMPLE_RATE, sample_rate), n) for y, n in zip(out, lengths)]
    if is_list:
        return out
    stacked = np.stack(out)
    return stacked if arr.ndim == 2 else stacked[0]


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad y to n samples (resampling round trips can be off by one)."""
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))

