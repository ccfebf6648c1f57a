"""Controlled degradations: speech + noise at an exact SNR, loudness-normalised (the SE paper, 3.2).

Protocol of :func:`mix_at_snr`, in order:

1. Trim: the clean utterance is center-trimmed to ``duration`` seconds. A shorter one
   follows ``short="keep"`` (use it whole: the mixture is as long as the utterance),
   ``"pad"`` (zero-pad both sides to ``duration``) or ``"skip"`` (raise
   :class:`ShortUtteranceError`; :func:`snr_sweep` records and skips it). The choice
   is written to ``info["short_policy"]``; nothing happens silently.
2. Degrade (optional): each item of ``degradations`` (:class:`Reverb`, :class:`Clip`) is
   applied to the speech before the SNR is set, so the SNR is that of the degraded speech.
3. Noise: a segment as long as the speech starts at a seeded random offset. A recording
   shorter than the speech is looped (read circularly from the offset, no crossfade: use
   loopable recordings) unless ``loop_noise=False``, which makes it an error.
4. SNR: the noise is scaled (time domain) so that ``10 log10(P_speech / P_noise)`` equals
   ``snr_db``. ``power="plain"`` uses the mean square over the whole segment (padding
   included); ``power="active"`` uses the mean square over the *active* speech frames
   only: 20 ms non-overlapping frames whose mean square lies within 40 dB of the loudest
   frame's (a simple energy rule, not ITU-T P.56). Noise power is always plain power.
5. Loudness: the mixture is scaled to ``target_lufs`` (ITU-R BS.1770-4 integrated loudness,
   pyloudnorm's meter; the gain is refined until the measurement is within 1e-3 LU, since
   the -70 LUFS absolute gate can move when the level changes). ``speech`` and ``noise`` get
   the same gain and ``noisy = speech + noise`` holds exactly in float32. The clean
   reference is normalised to the same target on its own.
6. Peak: the mixture's peak is reported (``info["peak"]``, ``info["clipped"]`` when it
   exceeds full scale, 1.0). ``on_clip="report"`` (default) leaves it there,
   ``"scale"`` lowers the whole mixture (and its components) to a 0.99 peak and reports
   the loudness that results, ``"error"`` raises. Nothing is ever clipped silently.

Randomness: the offset comes from a generator seeded by hashing (utterance id, noise id,
seed) with BLAKE2b (:func:`item_seed`), so a mixture is bit-identical whatever the
iteration order, sharding or worker count. The SNR is left out of that hash by default,
so a sweep scales *the same* noise segment to each SNR (a controlled sweep);
``offset_per_snr=True`` hashes the SNR too.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .data.record import (
    AudioError,
    AudioRecord,
    check_choice,
    check_int,
    check_real,
    check_waveform,
)
from .errors import UserError
from .models.muse.layers import MUSE_WINDOW

#: The paper's grid: integer SNRs from -10 to 30 dB (41 values).
DEFAULT_SNRS: tuple[int, ...] = tuple(range(-10, 31))
#: MUSE's native chunk: 30,700 samples (about 1.9 s at 16 kHz).
MUSE_CHUNK = MUSE_WINDOW
FULL_SCALE = 1.0
_SCALE_PEAK = 0.99
_ACTIVE_FRAME_S = 0.02
_ACTIVE_RANGE_DB = 40.0


class ShortUtteranceError(UserError, ValueError):
    """The utterance is shorter than ``duration`` and ``short="skip"`` was asked for."""


class UnknownNoiseError(UserError, KeyError):
    """A noise type was asked for that the noise recordings do not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ClippingError(UserError, ValueError):
    """The normalised mixture exceeds full scale and ``on_clip="error"`` was asked for."""


@dataclasses.dataclass(frozen=True, eq=False)
class Mixture:
    """One degraded utterance.

    Attributes
    ----------
    noisy : ndarray of shape (n,), float32
        The loudness-normalised mixture; exactly ``speech + noise`` in float32.
    speech, noise : ndarray of shape (n,), float32
        The two components as they appear in ``noisy``.
    clean : ndarray of shape (n,), float32
        The (trimmed/padded, undegraded) clean utterance normalised to ``target_lufs`` on its own.
    info : dict
        ids, SNR asked/achieved, offset, gains, LUFS before/after, peaks, policies.
    """

    noisy: np.ndarray
    speech: np.ndarray
    noise: np.ndarray
    clean: np.ndarray
    info: dict[str, Any]


# ----------------------------------------------------------------------------- seeds

def item_seed(*parts: Any, seed: int) -> int:
    """A 64-bit seed derived from ids and a user seed by BLAKE2b; stable across runs,
    machines and Python versions (floats are written with ``repr(float(x))``)."""
    def _fmt(p):
        if isinstance(p, (float, np.floating)) or (isinstance(p, (int, np.integer)) and not isinstance(p, bool)):
            return repr(float(p))
        return str(p)
    text = "\x1f".join([_fmt(p) for p in parts] + [f"seed={int(seed)}"])
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def item_rng(*parts: Any, seed: int) -> np.random.Generator:
    """``numpy.random.Generator(PCG64(item_seed(*parts, seed=seed)))``."""
    return np.random.Generator(np.random.PCG64(item_seed(*parts, seed=seed)))


# ----------------------------------------------------------------------------- levels

#: BS.1770 gating (pyloudnorm's Meter defaults, which :func:`loudness` reproduces operation for operation).
_BLOCK_S = 0.400
_BLOCK_STEP = 1.0 - 0.75
_ABS_GATE = -70.0
_REL_GATE = 10.0


@functools.lru_cache(maxsize=8)
def _k_weighting(sample_rate: int) -> tuple[tuple[float, np.ndarray, np.ndarray], ...]:
    """pyloudnorm's own K-weighting stages at ``sample_rate``: (passband gain, b, a) in its order."""
    import pyloudnorm

    meter = pyloudnorm.Meter(sample_rate)  # BS.1770-4 K-weighting
    return tuple((float(s.passband_gain), np.asarray(s.b), np.asarray(s.a)) for s in meter._filters.values())


def block_energies(x: np.ndarray, sample_rate: int, *, name: str = "signal") -> np.ndarray:
    """K-weighted mean squares of the 400 ms BS.1770 gating blocks (75 % overlap) of ``x``.

    x : array of shape (n,) with n > 0.4 s -> array of shape (blocks,), float64. The filter
    (pyloudnorm's coefficients, scipy's lfilter), block bounds and sums are pyloudnorm's, so
    :func:`gated_loudness` of the result is pyloudnorm's integrated loudness. Filtering is
    linear: the blocks of ``g x`` are ``g**2`` times these, so one call serves every gain.
    """
    from scipy.signal import lfilter

    if x.shape[0] <= int(_BLOCK_S * sample_rate):
        raise AudioError(f"{name} is {x.shape[0] / sample_rate:.3f} s long; loudness (BS.1770) needs "
                         "more than one 400 ms block. Use longer audio.")
    y = np.asarray(x, dtype=np.float64)
    if not np.isfinite(y).all():
        bad = int(np.flatnonzero(~np.isfinite(y))[0])
        raise AudioError(f"{name} holds non-finite samples (first at sample {bad}: {y[bad]}); loudness needs "
                         "finite audio. Remove or repair the NaN/inf samples.")
    for gain, b, a in _k_weighting(sample_rate):
        y = gain * lfilter(b, a, y)
    y2 = np.square(y)  # squared once; each block sums its slice as pyloudnorm's np.sum(np.square(.)) does
    scale = 1.0 / (_BLOCK_S * sample_rate)
    return np.array([scale * np.add.reduce(y2[lo:hi]) for lo, hi in _block_bounds(y.shape[0], sample_rate)])


@functools.lru_cache(maxsize=64)
def _block_bounds(n: int, sample_rate: int) -> tuple[tuple[int, int], ...]:
    """pyloudnorm's gating blocks of an n-sample signal, [lo, hi) in samples (its float formulas)."""
    n_blocks = int(np.round((n / sample_rate - _BLOCK_S) / (_BLOCK_S * _BLOCK_STEP))) + 1
    return tuple((int(_BLOCK_S * (j * _BLOCK_STEP) * sample_rate), int(_BLOCK_S * (j * _BLOCK_STEP + 1) * sample_rate))
                 for j in range(n_blocks))


def gated_loudness(z: np.ndarray, power_gain: float = 1.0) -> float:
    """Integrated loudness in LUFS of a signal whose block energies (:func:`block_energies`)
    are ``power_gain * z``: absolute gate -70 LUFS, relative gate -10 LU; -inf when no block
    passes (callers turn that into an error)."""
    z = z * power_gain if power_gain != 1.0 else z
    with np.errstate(divide="ignore", invalid="ignore"):
        level = -0.691 + 10.0 * np.log10(z)
        above = z[level >= _ABS_GATE]
        if above.shape[0] == 0:
            return -np.inf
        relative = -0.691 + 10.0 * np.log10(np.mean(above)) - _REL_GATE
        kept = z[(level > relative) & (level > _ABS_GATE)]
        if kept.shape[0] == 0:
            return -np.inf
        return float(-0.691 + 10.0 * np.log10(np.mean(kept)))


def _finite_loudness(value: float, name: str) -> float:
    if not np.isfinite(value):
        raise AudioError(f"{name} has loudness {value} LUFS: silent or below the -70 LUFS gate "
                         "everywhere. Use audio with signal in it.")
    return value


def loudness(x: np.ndarray, sample_rate: int, *, name: str = "signal") -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4; pyloudnorm's meter, computed by
    :func:`block_energies` and :func:`gated_loudness` to the same float64 value).

    x : array of shape (n,) with n > 0.4 s. Raises AudioError when it is shorter than one
    400 ms gating block or so quiet that every block is under the -70 LUFS gate (-inf).
    """
    return _finite_loudness(gated_loudness(block_energies(x, sample_rate, name=name)), name)


def normalise_gain(x: np.ndarray, sample_rate: int, target: float, name: str) -> tuple[float, float]:
    """Gain g with loudness(g x) == target within 1e-3 LU; returns (g, loudness before).

    ``x`` is filtered once; the loudness at each trial gain gates ``g**2`` times its block
    energies (the gating can move blocks across the -70 LUFS gate, hence the iteration).
    """
    z = block_energies(x, sample_rate, name=name)
    before = _finite_loudness(gated_loudness(z), name)
    gain = 10.0 ** ((target - before) / 20.0)
    for _ in range(4):
        now = _finite_loudness(gated_loudness(z, gain * gain), name)
        if abs(now - target) < 1e-3:
            break
        gain *= 10.0 ** ((target - now) / 20.0)
    return gain, before


_CLEAN_MEMO: collections.OrderedDict = collections.OrderedDict()
_CLEAN_MEMO_SIZE = 16
_CLEAN_MEMO_LOCK = threading.Lock()


def _clean_reference(x: np.ndarray, sample_rate: int, target: float, uid: str):
    """(gain, loudness before, float32 normalised clean, its loudness) of the clean utterance,
    memoised per content (SHA-256 of its samples; the last 16 kept): a sweep mixes each
    utterance with every noise at every SNR, and its clean reference is the same each time."""
    key = (hashlib.sha256(np.ascontiguousarray(x).data).hexdigest(),
           x.dtype.str, x.shape, sample_rate, target)
    with _CLEAN_MEMO_LOCK:
        hit = _CLEAN_MEMO.get(key)
        if hit is not None:
            _CLEAN_MEMO.move_to_end(key)
    if hit is None:
        gain, before = normalise_gain(x, sample_rate, target, f"clean {uid!r}")
        clean32 = (gain * x).astype(np.float32)
        after = loudness(clean32.astype(np.float64), sample_rate, name="clean")
        hit = (gain, before, clean32, after)
        with _CLEAN_MEMO_LOCK:
            _CLEAN_MEMO[key] = hit
            while len(_CLEAN_MEMO) > _CLEAN_MEMO_SIZE:
                _CLEAN_MEMO.popitem(last=False)
    gain, before, clean32, after = hit
    return gain, before, clean32.copy(), after


def active_mask(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Boolean mask of shape (n,): samples in 20 ms frames whose mean square is within
    40 dB of the loudest frame (the tail shorter than a frame joins the last frame)."""
    flen = max(1, int(round(_ACTIVE_FRAME_S * sample_rate)))
    n_frames = max(1, x.shape[0] // flen)
    bounds = np.minimum(np.arange(n_frames + 1) * flen, x.shape[0])
    bounds[-1] = x.shape[0]
    energy = np.add.reduceat(x * x, bounds[:-1]) / np.diff(bounds)
    active = energy >= energy.max() * 10.0 ** (-_ACTIVE_RANGE_DB / 10.0)
    return np.repeat(active, np.diff(bounds))


def speech_power(x: np.ndarray, sample_rate: int, power: str) -> float:
    """Mean square of ``x`` (``power="plain"``) or of its active frames (``"active"``)."""
    if power == "active":
        return float(np.mean(np.square(x[active_mask(x, sample_rate)])))
    return float(np.mean(np.square(x)))


def measure_snr(speech: np.ndarray, noise: np.ndarray, *, sample_rate: int = 16000, power: str = "plain") -> float:
    """10 log10(P_speech / P_noise) in float64, with the same power rules as :func:`mix_at_snr`."""
    s = np.asarray(speech, dtype=np.float64)
    n = np.asarray(noise, dtype=np.float64)
    return 10.0 * np.log10(speech_power(s, sample_rate, power) / np.mean(n * n))


# ----------------------------------------------------------------------------- degradations

@dataclasses.dataclass(frozen=True, eq=False)
class Reverb:
    """Convolve speech with a room impulse response (RIR).

    rir : array of shape (m,) at the mixing sample rate. The output keeps the input length
    and is aligned on the RIR's direct path (its largest-magnitude tap), so the speech does
    not move in time; the reverberant tail past the end is cut.
    """

    rir: np.ndarray
    name: str = "reverb"

    def __call__(self, x: np.ndarray, sample_rate: int) -> np.ndarray:
        from scipy.signal import fftconvolve

        h = check_waveform(self.rir, "rir")
        lag = int(np.argmax(np.abs(h)))
        return fftconvolve(x, h)[lag:lag + x.shape[0]]

    def describe(self) -> dict:
        h = np.asarray(self.rir, dtype=np.float64)
        return {"name": self.name, "rir_length": int(h.shape[0])}


@dataclasses.dataclass(frozen=True)
class Clip:
    """Hard-clip speech at ``level`` times its own peak (0 < level < 1): a recording
    channel driven into saturation. The clipped share of samples is reported."""

    level: float
    name: str = "clip"

    def __call__(self, x: np.ndarray, sample_rate: int) -> np.ndarray:
        level = check_real(self.level, "level", fn="Clip", low=0.0, high=1.0, low_open=True)
        t = level * float(np.max(np.abs(x)))
        return np.clip(x, -t, t)

    def describe(self) -> dict:
        return {"name": self.name, "level": float(self.level)}


def synthetic_rir(rt60: float, *, sample_rate: int = 16000, seed: int = 0, length: float | None = None) -> np.ndarray:
    """An exponentially decaying Gaussian-noise RIR with a unit direct path.

    Energy falls 60 dB in ``rt60`` seconds; ``length`` defaults to rt60. Deterministic in
    ``seed``. Returns array of shape (round(length * sample_rate),), float64.
    """
    rt60 = check_real(rt60, "rt60", fn="synthetic_rir", low=0.0, low_open=True)
    n = max(2, int(round((length or rt60) * sample_rate)))
    t = np.arange(n) / sample_rate
    rng = item_rng("synthetic_rir", rt60, n, seed=seed)
    h = rng.standard_normal(n) * 10.0 ** (-3.0 * t / rt60) * 0.3
    h[0] = 1.0
    return h


# ----------------------------------------------------------------------------- mixing

def content_id(x: np.ndarray) -> str:
    """A reproducible id of a waveform's content: ``"sha256:"`` and the first 16 hex digits of
    the SHA-256 of its float32 samples (the same for the same samples in any order of calls)."""
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    return "sha256:" + hashlib.sha256(a.tobytes()).hexdigest()[:16]


def _as_signal(x: Any, name: str, sample_rate: int) -> tuple[np.ndarray, str | None]:
    if isinstance(x, AudioRecord):
        if x.sample_rate != sample_rate:
            raise AudioError(f"{name} record {x.id!r} is at {x.sample_rate} Hz; mixing runs at "
                             f"{sample_rate} Hz. Resample it (the readers return 16 kHz).")
        return check_waveform(x.waveform, f"{name} {x.id!r}"), x.id
    return check_waveform(x, name), None


def _trim(x: np.ndarray, n_target: int | None, short: str, uid: str) -> tuple[np.ndarray, int, str]:
    n = x.shape[0]
    if n_target is None or n == n_target:
        return x, 0, "none"
    if n > n_target:
        start = (n - n_target) // 2
        return x[start:start + n_target], start, "center-trim"
    if short == "keep":
        return x, 0, "keep"
    if short == "pad":
        left = (n_target - n) // 2
        return np.pad(x, (left, n_target - n - left)), -left, "pad"
    raise ShortUtteranceError(f"Utterance {uid!r} has {n} samples, fewer than duration's {n_target}; "
                              "short='skip' skips it. Use short='keep' or 'pad' to include it.")


def _noise_segment(noise: np.ndarray, n: int, rng: np.random.Generator, loop: bool, nid: str):
    m = noise.shape[0]
    if m >= n:
        offset = int(rng.integers(0, m - n + 1))
        return noise[offset:offset + n], offset, False
    if not loop:
        raise AudioError(f"Noise {nid!r} has {m} samples but the speech needs {n}; loop_noise=False "
                         "forbids looping. Use a longer noise recording or loop_noise=True.")
    offset = int(rng.integers(0, m))
    return np.take(noise, (offset + np.arange(n)) % m), offset, True


def mix_at_snr(
    clean: np.ndarray | AudioRecord,
    noise: np.ndarray | AudioRecord,
    snr_db: float,
    *,
    sample_rate: int = 16000,
    seed: int,
    target_lufs: float = -23.0,
    duration: float | None = 10.0,
    short: str = "keep",
    loop_noise: bool = True,
    power: str = "plain",
    degradations: Sequence[Reverb | Clip] = (),
    on_clip: str = "report",
    utterance_id: str | None = None,
    noise_id: str | None = None,
    offset_per_snr: bool = False,
) -> Mixture:
    """Mix a clean utterance with noise at an exact SNR and normalise its loudness.

    Parameters
    ----------
    clean : array of shape (n,) or AudioRecord
        Mono clean speech at ``sample_rate`` (float; any real dtype is accepted).
    noise : array of shape (m,) or AudioRecord
        Mono noise recording at ``sample_rate``.
    snr_db : float
        Target SNR in dB (any finite value).
    sample_rate : int
    seed : int
        User seed; with the ids it fixes the noise offset (see :func:`item_seed`).
    target_lufs : float
        Loudness of ``noisy`` and of ``clean`` (default -23 LUFS, EBU R128).
    duration : float or None
        Length in seconds to center-trim to (default 10 s, the paper's); None keeps all.
    short : {'keep', 'pad', 'skip'}
        Policy for utterances shorter than ``duration`` (see the module docstring).
    loop_noise : bool
        Loop a noise recording shorter than the speech (default) or raise.
    power : {'plain', 'active'}
        Speech power for the SNR: whole segment, or active 20 ms frames only.
    degradations : sequence of Reverb / Clip
        Applied to the speech, in order, before the SNR is set.
    on_clip : {'report', 'scale', 'error'}
        What to do when the normalised mixture's peak exceeds full scale.
    utterance_id, noise_id : str, optional
        Ids for seeding and metadata (default: the records' ids; for arrays, a hash of
        their content, :func:`content_id`, so seeds follow the signals, not positions).
    offset_per_snr : bool
        Hash the SNR into the offset seed too (default False: one segment per
        utterance/noise pair, scaled to every SNR).

    Returns
    -------
    Mixture
        ``noisy``, ``speech``, ``noise``, ``clean`` (float32, shape (L,)) and ``info``.
    """
    fn = "mix_at_snr"
    sample_rate = check_int(sample_rate, "sample_rate", fn=fn, low=1)
    seed = check_int(seed, "seed", fn=fn, low=0)
    snr = check_real(snr_db, "snr_db", fn=fn)
    target_lufs = check_real(target_lufs, "target_lufs", fn=fn, high=0.0)
    check_choice(short, "short", ("keep", "pad", "skip"), fn=fn)
    check_choice(power, "power", ("plain", "active"), fn=fn)
    check_choice(on_clip, "on_clip", ("report", "scale", "error"), fn=fn)
    if duration is not None:
        duration = check_real(duration, "duration", fn=fn, low=0.0, low_open=True)
    for d in degradations:
        if not isinstance(d, (Reverb, Clip)):
            raise TypeError(f"The 'degradations' parameter of {fn} must hold Reverb or Clip items; "
                            f"got {type(d).__name__}.")

    x, rec_uid = _as_signal(clean, "clean", sample_rate)
    v, rec_nid = _as_signal(noise, "noise", sample_rate)
    uid = utterance_id if utterance_id is not None else (rec_uid if rec_uid is not None else content_id(x))
    nid = noise_id if noise_id is not None else (rec_nid if rec_nid is not None else content_id(v))

    n_target = None if duration is None else int(round(duration * sample_rate))
    x, trim_start, trim_action = _trim(x, n_target, short, uid)
    n = x.shape[0]

    s = x
    for d in degradations:
        s = d(s, sample_rate)
    check_waveform(s, f"degraded speech {uid!r}")

    parts = (uid, nid, snr) if offset_per_snr else (uid, nid)
    rng = item_rng(*parts, seed=seed)
    seg, offset, looped = _noise_segment(v, n, rng, loop_noise, nid)
    p_noise = float(np.mean(seg * seg))
    if p_noise == 0.0:
        raise AudioError(f"The noise segment of {nid!r} at offset {offset} ({n} samples) is silent; "
                         "its SNR is undefined. Use a noise recording without silent stretches.")
    p_speech = speech_power(s, sample_rate, power)
    noise_gain = float(np.sqrt(p_speech / (p_noise * 10.0 ** (snr / 10.0))))
    mix64 = s + noise_gain * seg

    mix_gain, lufs_before = normalise_gain(mix64, sample_rate, target_lufs, f"mixture of {uid!r}+{nid!r}")
    speech32 = (mix_gain * s).astype(np.float32)
    noise32 = (mix_gain * noise_gain * seg).astype(np.float32)
    noisy32 = speech32 + noise32
    peak = float(np.max(np.abs(noisy32)))
    clipped = peak > FULL_SCALE
    peak_gain = 1.0
    if clipped and on_clip == "error":
        raise ClippingError(f"Mixture of {uid!r} and {nid!r} at {snr:g} dB peaks at {peak:.3f} "
                            f"({20 * np.log10(peak):+.2f} dBFS) after normalising to {target_lufs} LUFS. "
                            "Use on_clip='report' or 'scale', or a lower target_lufs.")
    if clipped and on_clip == "scale":
        peak_gain = _SCALE_PEAK / peak
        speech32 = (mix_gain * peak_gain * s).astype(np.float32)
        noise32 = (mix_gain * peak_gain * noise_gain * seg).astype(np.float32)
        noisy32 = speech32 + noise32

    clean_gain, clean_lufs_before, clean32, clean_lufs_after = _clean_reference(x, sample_rate, target_lufs, uid)
    clean_peak = float(np.max(np.abs(clean32)))

    info = {
        "utterance_id": uid,
        "noise_id": nid,
        "seed": seed,
        "sample_rate": sample_rate,
        "snr_target_db": snr,
        "snr_achieved_db": measure_snr(speech32, noise32, sample_rate=sample_rate, power=power),
        "power": power,
        "num_samples": n,
        "duration_s": n / sample_rate,
        "trim_action": trim_action,
        "trim_start": trim_start,
        "short_policy": short,
        "noise_offset": offset,
        "noise_looped": looped,
        "noise_length": int(v.shape[0]),
        "noise_gain": noise_gain,
        "mix_gain": mix_gain * peak_gain,
        "clean_gain": clean_gain,
        "lufs_target": target_lufs,
        "lufs_before": lufs_before,
        "lufs_after": loudness(noisy32.astype(np.float64), sample_rate, name="noisy"),
        "clean_lufs_before": clean_lufs_before,
        "clean_lufs_after": clean_lufs_after,
        "peak": float(np.max(np.abs(noisy32))),
        "peak_before_limit": peak,
        "peak_dbfs": 20.0 * float(np.log10(max(float(np.max(np.abs(noisy32))), 1e-12))),
        "clipped": clipped,
        "on_clip": on_clip,
        "peak_scaled": peak_gain != 1.0,
        "clean_peak": clean_peak,
        "clean_clipped": clean_peak > FULL_SCALE,
        "degradations": [d.describe() for d in degradations],
    }
    return Mixture(noisy=noisy32, speech=speech32, noise=noise32, clean=clean32, info=info)


# ----------------------------------------------------------------------------- windows

def window_starts(n: int, *, size: int = MUSE_CHUNK, mode: str = "center", hop: int | None = None) -> list[int]:
    """Start indices of model windows over a signal of ``n`` samples.

    ``mode="first"``: [0]; ``"center"``: [(n - size) // 2]; ``"all"``: 0, hop, 2 hop, ...
    up to the last start with a full window (the tail shorter than a window is dropped;
    ``hop`` defaults to ``size``). A signal shorter than ``size`` gives one window at 0
    or, for "center", a negative start meaning symmetric zero padding (see :func:`windows`).
    """
    fn = "window_starts"
    n = check_int(n, "n", fn=fn, low=1)
    size = check_int(size, "size", fn=fn, low=1)
    check_choice(mode, "mode", ("first", "center", "all"), fn=fn)
    if n < size:
        return [-((size - n) // 2) if mode == "center" else 0]
    if mode == "first":
        return [0]
    if mode == "center":
        return [(n - size) // 2]
    hop = size if hop is None else check_int(hop, "hop", fn=fn, low=1)
    return list(range(0, n - size + 1, hop))


def windows(x: np.ndarray, *, size: int = MUSE_CHUNK, mode: str = "center", hop: int | None = None,
            pad_short: bool = True) -> np.ndarray:
    """Cut ``x`` of shape (..., n) into model chunks of shape (..., k, size).

    Starts follow :func:`window_starts`. A signal shorter than ``size`` is zero-padded
    (at the end for "first"/"all", both sides for "center") when ``pad_short`` and is an
    error otherwise.
    """
    x = np.asarray(x)
    n = x.shape[-1]
    if n < size and not pad_short:
        raise ValueError(f"The signal has {n} samples, fewer than one window ({size}); "
                         "pass pad_short=True to zero-pad it.")
    starts = window_starts(n, size=size, mode=mode, hop=hop)
    if n < size:
        left = -starts[0]
        pad = [(0, 0)] * (x.ndim - 1) + [(left, size - n - left)]
        return np.pad(x, pad)[..., None, :]
    return np.stack([x[..., s:s + size] for s in starts], axis=-2)


# ----------------------------------------------------------------------------- sweeps

def audio_records(items: Any, what: str, sample_rate: int) -> list[AudioRecord]:
    if isinstance(items, Mapping):
        out = []
        for k, v in items.items():
            if isinstance(v, AudioRecord):
                out.append(v if v.id == k else dataclasses.replace(v, id=str(k)))
            else:
                out.append(AudioRecord(id=str(k), speaker=None, waveform=np.asarray(v), sample_rate=sample_rate))
        return out
    out = list(items)
    for r in out:
        if not isinstance(r, AudioRecord):
            raise TypeError(f"snr_sweep's {what} must be AudioRecords or a mapping id -> array; "
                            f"got {type(r).__name__}.")
    return out


class SNRSweep(Sequence):
    """Lazy, indexable sweep over (utterance, noise type, SNR); see :func:`snr_sweep`.

    ``keys`` lists (utterance id, noise id, SNR) of this shard in order; ``sweep[i]``
    computes that mixture on demand. Utterances skipped by ``short="skip"`` are listed in
    ``skipped`` (known up front: lengths are checked when the sweep is built).
    """

    def __init__(self, utterances, noises, snrs, *, seed, shard, num_shards, noise_types, mix_kwargs):
        fn = "snr_sweep"
        self.seed = check_int(seed, "seed", fn=fn, low=0)
        self.num_shards = check_int(num_shards, "num_shards", fn=fn, low=1)
        self.shard = check_int(shard, "shard", fn=fn, low=0, high=self.num_shards - 1)
        self.snrs = [check_real(s, "snrs", fn=fn) for s in snrs]
        if not self.snrs:
            raise ValueError("The 'snrs' parameter of snr_sweep must hold at least one SNR; got none.")
        self.mix_kwargs = dict(mix_kwargs)
        self.mix_kwargs.setdefault("sample_rate", 16000)
        sr = self.mix_kwargs["sample_rate"]
        utts = audio_records(utterances, "utterances", sr)
        noise_recs = {r.id: r for r in audio_records(noises, "noises", sr)}
        if noise_types is not None:
            unknown = [t for t in noise_types if t not in noise_recs]
            if unknown:
                raise UnknownNoiseError(f"Unknown noise type(s) {unknown} in snr_sweep; available: {sorted(noise_recs)}.")
            noise_recs = {t: noise_recs[t] for t in noise_types}
        dur = self.mix_kwargs.get("duration", 10.0)
        self.skipped: list[str] = []
        if self.mix_kwargs.get("short", "keep") == "skip" and dur is not None:
            n_target = int(round(dur * sr))
            self.skipped = [u.id for u in utts if u.waveform.shape[0] < n_target]
            utts = [u for u in utts if u.waveform.shape[0] >= n_target]
        self.utterances = {u.id: u for u in utts}
        if len(self.utterances) != len(utts):
            raise ValueError("snr_sweep's utterances must have unique ids.")
        self.noises = noise_recs
        all_keys = [(u, t, s) for u in self.utterances for t in self.noises for s in self.snrs]
        self.keys = all_keys[self.shard::self.num_shards]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        uid, nid, snr = self.keys[i]
        return mix_at_snr(self.utterances[uid], self.noises[nid], snr, seed=self.seed, **self.mix_kwargs)


def snr_sweep(
    utterances: Iterable[AudioRecord] | Mapping[str, np.ndarray],
    noises: Iterable[AudioRecord] | Mapping[str, np.ndarray],
    snrs: Iterable[float] = DEFAULT_SNRS,
    *,
    seed: int,
    shard: int = 0,
    num_shards: int = 1,
    noise_types: Sequence[str] | None = None,
    **mix_kwargs: Any,
) -> SNRSweep:
    """All mixtures of utterances x noise types x SNRs, computed lazily.

    Parameters
    ----------
    utterances : AudioRecords or mapping id -> array of shape (n,)
    noises : AudioRecords or mapping noise type -> array of shape (m,)
        One recording per noise type; the record id is the noise id.
    snrs : iterable of float
        Default: integer SNRs -10 ... 30 dB (41 values).
    seed : int
    shard, num_shards : int
        Keep items ``shard, shard + num_shards, ...`` of the full (utterance, noise, SNR)
        product in that order; the shards partition the sweep and every item is the same
        mixture whatever shard or worker computes it.
    noise_types : sequence of str, optional
        Subset of noise ids to use; an unknown one is a KeyError listing those available.
    **mix_kwargs
        Passed to :func:`mix_at_snr` (duration, short, power, degradations, ...).

    Returns
    -------
    SNRSweep
        A Sequence of :class:`Mixture` (usable as a torch map-style dataset).
    """
    for k in ("seed", "utterance_id", "noise_id"):
        if k in mix_kwargs:
            raise TypeError(f"snr_sweep sets {k!r} itself; do not pass it in mix_kwargs.")
    return SNRSweep(utterances, noises, snrs, seed=seed, shard=shard, num_shards=num_shards,
                    noise_types=noise_types, mix_kwargs=mix_kwargs)
