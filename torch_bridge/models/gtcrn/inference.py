"""The official GTCRN inference pipeline: load, STFT, model, inverse STFT (architecture §1).

Per utterance x of L samples at 16 kHz (no normalisation, no gain)::

    spec = gtcrn_stft(x)            # (1, 257, T, 2), T = 1 + L // 256: n_fft 512, hop 256,
                                    # sqrt of the periodic Hann window, centred, reflect padding
    with torch.inference_mode():
        out = model(spec)           # (1, 257, T, 2), model in eval mode
    y = gtcrn_istft(out)            # (1, 256 * (T - 1)) = 256 * (L // 256) samples

so the enhanced waveform is ``L mod 256`` samples shorter than the input, as in the official
``infer.py``. :func:`gtcrn_enhance` does all of it (batches, lists, other sample rates).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from torch_bridge.models.gtcrn.model import GTCRN, N_FFT, SAMPLE_RATE
from torch_bridge.weights import GTCRN_SOURCES, resolve_checkpoint

HOP = 256
MIN_SAMPLES = N_FFT // 2 + 1  # the centred reflect padding needs more than 256 samples
DEFAULT_VARIANT = "vctk"


def gtcrn_variant(name: str | None) -> str:
    """``"gtcrn"``, ``"gtcrn:vctk"``, ``"vctk"`` -> ``"vctk"``; ``"gtcrn:dns3"``, ``"dns3"`` -> ``"dns3"``."""
    if name is None or name == "gtcrn":
        return DEFAULT_VARIANT
    variant = name.split(":", 1)[1] if name.startswith("gtcrn:") else name
    if variant not in GTCRN_SOURCES:
        known = ", ".join(["gtcrn"] + [f"gtcrn:{v}" for v in GTCRN_SOURCES])
        raise ValueError(f"The 'variant' parameter must name a GTCRN checkpoint ({known}); got {name!r}.")
    return variant


def load_gtcrn(
    checkpoint: str | os.PathLike | None = None,
    *,
    variant: str = DEFAULT_VARIANT,
    verify: bool = True,
    url: str | None = None,
) -> GTCRN:
    """GTCRN in eval mode with official weights loaded strictly.

    Parameters
    ----------
    checkpoint : path, optional
        A checkpoint file (the official ``.tar`` files are torch zip files holding
        ``{'epoch', 'optimizer', 'model': state_dict}``; a bare state dict also works). Default:
        ``JAXPROBE_GTCRN_CHECKPOINT`` (``JAXPROBE_GTCRN_DNS3_CHECKPOINT`` for dns3), then
        ``$JAXPROBE_CACHE/gtcrn/model_trained_on_<variant>.tar``, then the pinned download.
    variant : str
        ``"vctk"`` (VCTK-DEMAND training, default) or ``"dns3"``; ``"gtcrn:dns3"`` etc. work too.
    verify : bool
        Check the file's sha256 against the official one of ``variant`` (default). False
        accepts any file whose keys and shapes match, e.g. your own weights.
    url : str, optional
        Download URL override (default ``JAXPROBE_GTCRN_URL`` / ``JAXPROBE_GTCRN_DNS3_URL`` or
        the pinned official URL).
    """
    source = GTCRN_SOURCES[gtcrn_variant(variant)]
    path = resolve_checkpoint(source, checkpoint, url=url, verify=verify)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"Could not read the GTCRN checkpoint {str(path)!r} as a torch file ({type(exc).__name__}: {exc}). "
            "Expected an official model_trained_on_*.tar, a torch zip holding {'model': state_dict}."
        ) from exc
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ValueError(
            f"The GTCRN checkpoint {str(path)!r} holds a {type(obj).__name__}; expected a dict "
            "{'model': state_dict} or a state dict."
        )
    model = GTCRN()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"The GTCRN checkpoint {str(path)!r} does not match the GTCRN network: {exc}") from exc
    return model.eval()


# ----------------------------------------------------------------------------- spectra
def _window(device=None) -> torch.Tensor:
    return torch.hann_window(N_FFT, device=device).pow(0.5)  # periodic Hann, then the square root


def _check_waveforms(x: torch.Tensor, name: str) -> None:
    """Rows of ``x`` (B, L) must be finite, long enough for the STFT, and not silent."""
    if x.shape[-1] < MIN_SAMPLES:
        raise ValueError(
            f"The '{name}' parameter needs at least {MIN_SAMPLES} samples per waveform (GTCRN's centred "
            f"512-point STFT pads 256 samples by reflection); got {x.shape[-1]}."
        )
    finite = torch.isfinite(x).all(dim=-1)
    silent = ~(x != 0).any(dim=-1)
    for i in range(x.shape[0]):
        where = f"{name}[{i}]" if x.shape[0] > 1 else name
        if not finite[i]:
            raise ValueError(f"The '{where}' parameter holds NaN or inf; remove them before enhancing.")
        if silent[i]:
            raise ValueError(f"The '{where}' parameter is silent (all zeros); GTCRN needs a signal to enhance.")


def _as_batch(waveforms, name: str) -> tuple[torch.Tensor, bool]:
    if isinstance(waveforms, torch.Tensor):
        x = waveforms
    else:
        arr = np.asarray(waveforms)
        if arr.dtype.kind not in "iuf":
            raise TypeError(f"The '{name}' parameter must hold real numbers; got dtype {arr.dtype}.")
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if x.is_complex() or x.ndim not in (1, 2):
        raise ValueError(
            f"The '{name}' parameter must be a real waveform of shape (L,) or a batch (B, L); got "
            f"{tuple(x.shape)} ({x.dtype}). Downmix multichannel audio to mono first."
        )
    x = x.to(torch.float32)
    single = x.ndim == 1
    x = x[None] if single else x
    if x.shape[0] == 0:
        raise ValueError(f"The '{name}' parameter is an empty batch; give at least one waveform.")
    _check_waveforms(x, name)
    return x, single


def gtcrn_stft(waveforms) -> torch.Tensor:
    """The model input: the official STFT of 16 kHz waveforms.

    Parameters
    ----------
    waveforms : array or tensor of shape (L,) or (B, L)
        L >= 257; finite and not all zeros. A tensor stays on its device.

    Returns
    -------
    spec : float32 tensor of shape (B, 257, T, 2), T = 1 + L // 256
        Real and imaginary parts last (n_fft 512, hop 256, sqrt-Hann, centred, reflect).
    """
    x, _ = _as_batch(waveforms, "waveforms")
    spec = torch.stft(x, N_FFT, hop_length=HOP, win_length=N_FFT, window=_window(x.device), center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    return torch.view_as_real(spec)


def gtcrn_istft(spec: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`gtcrn_stft` for model outputs: ``(B, 257, T, 2)`` -> ``(B, 256 * (T - 1))``."""
    if spec.ndim != 4 or spec.shape[1] != N_FFT // 2 + 1 or spec.shape[3] != 2:
        raise ValueError(f"The 'spec' parameter of gtcrn_istft must have shape (B, 257, T, 2); got {tuple(spec.shape)}.")
    z = torch.view_as_complex(spec.contiguous())
    return torch.istft(z, N_FFT, hop_length=HOP, win_length=N_FFT, window=_window(spec.device), center=True,
                       normalized=False, onesided=True)


# ----------------------------------------------------------------------------- enhance
def _resample(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), orig, new).numpy()


def _enhance_batch(model: GTCRN, x: torch.Tensor) -> np.ndarray:
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model(gtcrn_stft(x.to(device)))
        return gtcrn_istft(out).cpu().numpy()


def gtcrn_enhance(model: GTCRN, waveform, sample_rate: int = SAMPLE_RATE):
    """Enhance speech with GTCRN following the official inference pipeline (module docstring).

    Parameters
    ----------
    model : GTCRN
        From :func:`load_gtcrn` (eval mode). Inputs go to the device of its parameters.
    waveform : array of shape (L,) or (B, L), or a sequence of 1-D arrays
        Mono waveforms, each with at least 257 samples at 16 kHz, finite and not silent. A 2-D
        array is one batch (one forward pass); the items of a list run one by one.
    sample_rate : int
        Rate of ``waveform``; other rates are resampled to 16 kHz with
        ``torchaudio.functional.resample`` and the output back to ``sample_rate``.

    Returns
    -------
    float32 ndarray of shape (256 * (L // 256),) or (B, 256 * (L // 256)) at 16 kHz (the
    official pipeline drops the last ``L mod 256`` samples; at another rate, the resampled
    length of that), or a list of 1-D arrays for list input.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"The 'sample_rate' parameter of gtcrn_enhance must be a positive int; got {sample_rate!r}.")
    if isinstance(waveform, (list, tuple)):
        if not waveform:
            raise ValueError("The 'waveform' parameter is an empty list; give at least one waveform.")
        return [gtcrn_enhance(model, w, sample_rate) for w in waveform]
    x, single = _as_batch(waveform, "waveform")
    if sample_rate != SAMPLE_RATE:
        x16 = torch.from_numpy(_resample(x.cpu().numpy(), int(sample_rate), SAMPLE_RATE))
        _check_waveforms(x16, "waveform")  # still long enough after resampling to 16 kHz
        y = _resample(_enhance_batch(model, x16), SAMPLE_RATE, int(sample_rate))
    else:
        y = _enhance_batch(model, x)
    y = y.astype(np.float32, copy=False)
    return y[0] if single else y
