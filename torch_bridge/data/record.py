"""The record every reader yields, and the checks every waveform passes once at the edge.

All readers return :class:`AudioRecord` with a mono float32 waveform at 16 kHz (the
project's internal rate); they resample at the edge with torchaudio's resampler and read
with soundfile. Errors name the file, say what was expected and what arrived.
"""
from __future__ import annotations

import dataclasses
import functools
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np

from torch_bridge.errors import UserError

SAMPLE_RATE = 16000
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class AudioError(UserError, ValueError):
    """An audio input that cannot be used: unreadable, empty, silent, non-finite,
    multichannel where mono is expected, or at a sample rate that is not allowed."""


@dataclasses.dataclass(frozen=True, eq=False)
class AudioRecord:
    """One mono recording.

    Attributes
    ----------
    id : str
        Unique within its dataset (e.g. ``p232_001``, ``19-198-0001``, ``DKITCHEN``).
    speaker : str or None
        Speaker id; None for noise.
    waveform : ndarray of shape (n,), float32
        Mono samples in [-1, 1] at ``sample_rate``.
    sample_rate : int
        16000 for everything the readers return.
    transcript : str or None
        Orthographic transcript where the dataset has one.
    path : str or None
        The file it was read from.
    meta : dict
        Dataset-specific extras (environment, channel, chapter, split, licence, ...).
    """

    id: str
    speaker: str | None
    waveform: np.ndarray
    sample_rate: int
    transcript: str | None = None
    path: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.waveform.shape[0] / self.sample_rate


def _where(fn: str | None) -> str:
    return f" of {fn}" if fn else ""


# check_int, check_real and check_choice: word-for-word copies of jaxprobe/_validate.py's (torch_bridge does not
# import jaxprobe; tests/test_layout.py checks that both word every error alike)
def check_int(v: Any, name: str, *, fn: str | None = None, low: int | None = None, high: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"The '{name}' parameter{_where(fn)} must be an int; got {v!r} ({type(v).__name__}).")
    v = int(v)
    lo = "-inf" if low is None else str(low)
    hi = "inf)" if high is None else f"{high}]"
    if (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"The '{name}' parameter{_where(fn)} must be an int in [{lo}, {hi}. Got {v} instead.")
    return v


def check_real(v: Any, name: str, *, fn: str | None = None, low: float | None = None, high: float | None = None,
               low_open: bool = False) -> float:
    """``v`` as a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``); ValueError otherwise."""
    ok = not isinstance(v, (bool, np.bool_)) and isinstance(v, numbers.Real) and bool(np.isfinite(v))
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v <= high
    if not ok:
        lo = "-inf" if low is None else str(low)
        hi = "inf)" if high is None else f"{high}]"
        raise ValueError(f"The '{name}' parameter{_where(fn)} must be a finite number in "
                         f"{'(' if low_open else '['}{lo}, {hi}. Got {v!r} instead.")
    return float(v)


def check_choice(v: Any, name: str, choices, *, fn: str | None = None):
    """``v`` if it is one of ``choices`` (same type and value: ``True`` is not ``1``), else ValueError."""
    for c in choices:
        if v is c:
            return c
        if isinstance(c, str) and isinstance(v, str) and v == c:
            return c
        if (isinstance(c, numbers.Number) and not isinstance(c, bool) and isinstance(v, numbers.Number)
                and not isinstance(v, (bool, np.bool_)) and v == c):
            return c
    opts = ", ".join(repr(c) for c in choices)
    raise ValueError(f"The '{name}' parameter{_where(fn)} must be one of {opts}. Got {v!r} instead.")


def _label(name: str, source: str | os.PathLike | None) -> str:
    return f"{name} ({source})" if source is not None else name


def check_waveform(
    x: Any,
    name: str = "waveform",
    *,
    source: str | os.PathLike | None = None,
    allow_silent: bool = False,
) -> np.ndarray:
    """Validate a mono waveform and return it as a float64 array of shape (n,).

    Parameters
    ----------
    x : array_like of shape (n,)
        Real samples. A 2-D array is rejected as multichannel (pick or mix a channel first).
    name : str
        What to call it in errors.
    source : path, optional
        The file it came from, named in errors.
    allow_silent : bool
        Accept an all-zero signal (default: an error, since its loudness is -inf).

    Raises
    ------
    AudioError
        Non-numeric, not 1-D, empty, NaN/inf, or exactly silent.
    """
    label = _label(name, source)
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise AudioError(f"{label} must hold real samples; got dtype {arr.dtype}.")
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise AudioError(
            f"{label} must be mono with shape (n,); got shape {arr.shape}. "
            "Select one channel (x[:, 0]) or average the channels before passing it."
        )
    if arr.shape[0] == 0:
        raise AudioError(f"{label} is empty (0 samples); expected a recording with audio in it.")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise AudioError(
            f"{label} must be finite; found {int(bad.sum())} NaN/inf sample(s), the first at "
            f"index {int(np.argmax(bad))}. Repair or drop the file."
        )
    if not allow_silent and not np.any(arr):
        raise AudioError(
            f"{label} is digitally silent (all {arr.shape[0]} samples are 0), so its power and "
            "loudness are undefined (-inf). Use a recording with signal in it."
        )
    return arr


@functools.lru_cache(maxsize=16)
def _resampler(orig_rate: int, new_rate: int):
    import torch
    import torchaudio.transforms as AT

    return AT.Resample(orig_rate, new_rate, dtype=torch.float64)


def resample(x: np.ndarray, orig_rate: int, new_rate: int = SAMPLE_RATE, *, block: int = 1 << 20) -> np.ndarray:
    """Resample a mono float waveform with torchaudio's band-limited sinc resampler
    (``torchaudio.transforms.Resample``, its kernel cached per rate pair).

    x : array of shape (n,) -> array of shape (ceil(n * new_rate / orig_rate),), same dtype.

    Signals longer than about ``block`` input samples are resampled in blocks with a
    margin of real neighbouring samples (block edges on whole resampling periods), which
    gives the one-shot result to rounding error while bounding torch's convolution buffers
    (one shot, a 5-minute 48 kHz file would need over 1 GB).
    """
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate == new_rate:
        return x
    import math

    import torch

    g = math.gcd(orig_rate, new_rate)
    period_in, period_out = orig_rate // g, new_rate // g
    rs = _resampler(orig_rate, new_rate)
    xd = np.ascontiguousarray(x, dtype=np.float64)
    n = xd.shape[0]
    n_out = math.ceil(n * new_rate / orig_rate)
    periods = max(1, block // period_in)
    margin = period_in * math.ceil(64 * max(1.0, orig_rate / new_rate) / period_in + 1)
    out = []
    with torch.no_grad():
        for start in range(0, n, periods * period_in):
            stop = min(n, start + periods * period_in)
            lo, hi = max(0, start - margin), min(n, stop + margin)
            y = rs(torch.from_numpy(xd[lo:hi])).numpy()
            skip = (start - lo) // period_in * period_out
            take = math.ceil(stop * new_rate / orig_rate) - start // period_in * period_out
            out.append(y[skip:skip + take])
    y = np.concatenate(out)[:n_out]
    return y.astype(x.dtype, copy=False)


def read_audio(
    path: str | os.PathLike,
    *,
    allowed_rates: tuple[int, ...] | None = None,
    channel: int | None = None,
    target_rate: int = SAMPLE_RATE,
    allow_silent: bool = False,
) -> np.ndarray:
    """Read one audio file with soundfile, check it, and return mono float32 at ``target_rate``.

    Parameters
    ----------
    path : path
        A file soundfile can read (wav, flac, ogg).
    allowed_rates : tuple of int, optional
        File sample rates this dataset may have; anything else is an error.
    channel : int, optional
        1-based channel to take from a multichannel file. Without it a
        multichannel file is an error (mono is expected).
    target_rate : int
        Rate of the returned waveform (resampled at the edge).

    Returns
    -------
    waveform : ndarray of shape (n,), float32
    """
    import soundfile as sf

    path = Path(path)
    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / OSError
        raise AudioError(f"Cannot read audio file {path}: {exc}. Check the file is complete "
                         "and in a format soundfile reads (wav, flac, ogg).") from exc
    if allowed_rates is not None and rate not in allowed_rates:
        allowed = " or ".join(f"{r} Hz" for r in allowed_rates)
        raise AudioError(f"{path} has sample rate {rate} Hz; this dataset expects {allowed}. "
                         "Use the dataset's original files (or convert them) at an allowed rate.")
    n_ch = data.shape[1]
    if channel is None:
        if n_ch != 1:
            raise AudioError(f"{path} has {n_ch} channels where mono is expected. "
                             "Pass channel=1 (1-based) to take one channel, or downmix the file.")
        x = data[:, 0]
    else:
        if not 1 <= channel <= n_ch:
            raise AudioError(f"{path} has {n_ch} channel(s); channel={channel} is out of range [1, {n_ch}].")
        x = data[:, channel - 1]
    x = check_waveform(x, "audio", source=path, allow_silent=allow_silent)
    return resample(x, rate, target_rate).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Entry:
    """What a reader knows about one item before reading its audio."""

    id: str
    path: Path
    speaker: str | None = None
    transcript: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


class AudioDataset:
    """A lazily read, indexable list of :class:`AudioRecord`.

    Subclasses fill ``self.entries`` (sorted, so the order does not depend on the file
    system) and set ``allowed_rates`` / ``channel``; audio is read on ``__getitem__``.
    """

    allowed_rates: tuple[int, ...] | None = None
    channel: int | None = None

    def __init__(self, entries: list[Entry]):
        if not entries:
            raise AudioError(f"{type(self).__name__} found no audio files; check the root folder and layout.")
        ids = [e.id for e in entries]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
            raise AudioError(f"{type(self).__name__} found duplicate ids {dup}; ids must be unique.")
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> AudioRecord:
        e = self.entries[i]
        wav = read_audio(e.path, allowed_rates=self.allowed_rates, channel=self.channel)
        return AudioRecord(id=e.id, speaker=e.speaker, waveform=wav, sample_rate=SAMPLE_RATE,
                           transcript=e.transcript, path=str(e.path), meta=dict(e.meta))

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    def by_id(self, record_id: str) -> AudioRecord:
        for i, e in enumerate(self.entries):
            if e.id == record_id:
                return self[i]
        raise KeyError(f"{type(self).__name__} has no item with id {record_id!r}.")


def require_dir(root: str | os.PathLike, what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"The {what} root {root} is not a folder; pass the folder that holds the data.")
    return root
