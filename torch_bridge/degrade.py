"""Degradation axes beyond additive noise: reverberation at a target clarity C50, hard clipping,
and the sweep over any axis (``snr``, ``c50``, ``clipping``) that the probing study dumps.

Reverberation
-------------
:func:`rir_at_c50` synthesises a room impulse response with pyroomacoustics' image-source
method (a shoebox room, one uniform wall material, no air absorption). From the seed it draws
the room (length 4-9 m, width 3-7 m, height 2.5-3.5 m), a source and a microphone 0.5 m or
more from every wall, 1.2-1.8 m high and 1-3 m apart. Only the wall absorption is then
adjusted until the RIR's C50 is within 0.5 dB of the target: first on the image sources'
energies (each image's energy is (1 - a)^(reflections) / r^2, arriving at r / c), then on the
RIR pyroomacoustics computes, correcting the target by the difference. So one seed gives one
room geometry at every C50 — the same direct path — and a sweep over C50 changes only the
reverberation, as an SNR sweep changes only the noise level.

C50 (:func:`c50`) is the clarity of an RIR h: ``10 log10(E_early / E_late)``, where the early
part is everything up to 50 ms after the direct-path peak (the largest |h|; the samples before
it are the lead-in of the direct path's fractional-delay filter, nothing arrives earlier) and
the late part is the rest. Targets outside [C50_MIN, C50_MAX] dB are refused at once; inside,
a target the drawn room cannot reach with absorption in [ABSORPTION_MIN, ABSORPTION_MAX] is an
error naming the range that room gives.

Clipping
--------
:class:`torch_bridge.mixing.Clip`: symmetric hard clipping at ``level`` times the speech's own
peak (level 1 leaves it unchanged; 0.1 clips everything above a tenth of the peak).
:func:`clipped_fraction` reports the share of samples it clips.

Sweeps
------
:func:`degradation_sweep` is the lazy (utterance, noise type, level) sweep of any axis. On the
SNR axis it is :func:`torch_bridge.mixing.snr_sweep`. On the C50 and clipping axes the speech is
degraded first, then the noise type is added at the fixed ``noise_snr`` (so the noise types
stay the groups of the hierarchical bootstrap), and the mixture is normalised to the target
loudness (-23 LUFS) like every mixture. The clean reference of the reverberation axis is a
setting, ``reference``: ``"direct"`` (default) is the clean speech convolved with the RIR's
direct path alone (same room, image order 0: the same delay, gain and fractional-delay filter
as the direct sound in the mixture), ``"dry"`` the clean speech as recorded. The default is
"direct" because it is the signal a dereverberating system can recover exactly: against the
dry signal, the sub-sample delay and the fractional-delay filter of the direct path alone cap
SI-SDR (a half-sample shift costs ~6 dB at 4 kHz), so the quality numbers would mix that
artefact into the reverberation they measure. Both are loudness-normalised to the target.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .data.record import check_choice, check_int, check_real
from .errors import UserError
from .mixing import Clip, Mixture, Reverb, normalise_gain, audio_records, item_seed, mix_at_snr

__all__ = ["AXES", "C50_MAX", "C50_MIN", "C50Error", "DegradationSweep", "RoomRir", "c50",
           "clipped_fraction", "degradation_sweep", "degraded_mixture", "rir_at_c50", "room_rir_at_c50"]

#: The degradation axes and the condition field each writes into the activation store.
AXES = ("snr", "c50", "clipping")
#: Targets outside this range are refused before any room is built (dB). Every room of the
#: generator reaches it: over seeds 0-39 the image model's reach at the absorption bounds was
#: -1.2..1.1 dB (the RIRs measure ~0.6 dB above the model there) up to 63..102 dB.
C50_MIN, C50_MAX = 3.0, 40.0
#: Wall energy absorption searched (uniform material).
ABSORPTION_MIN, ABSORPTION_MAX = 0.1, 0.98
#: C50 tolerance of :func:`rir_at_c50` (dB).
C50_TOLERANCE = 0.5
SOUND_SPEED = 343.0
_LATE_FLOOR = 1e-4  # image order: reflections until (1 - a)^n falls below this


class C50Error(UserError, ValueError):
    """A C50 target no room of the generator can reach."""


def c50(rir, sample_rate: int = 16000) -> float:
    """Clarity C50 of an impulse response in dB (float64; see the module docstring).

    rir : array of shape (m,) with energy after the first 50 ms of the direct path.
    """
    h = np.asarray(rir, dtype=np.float64)
    if h.ndim != 1 or h.size == 0 or not np.all(np.isfinite(h)):
        raise ValueError(f"The 'rir' parameter of c50 must be a finite 1-D array; got shape {h.shape}.")
    split = int(np.argmax(np.abs(h))) + int(round(0.05 * sample_rate))
    early, late = float(np.sum(h[:split] ** 2)), float(np.sum(h[split:] ** 2))
    if late == 0.0 or early == 0.0:
        raise ValueError(f"The 'rir' parameter of c50 has no energy {'after' if late == 0 else 'before'} 50 ms "
                         f"past its direct-path peak ({h.size} samples); C50 is undefined.")
    return 10.0 * math.log10(early / late)


@dataclasses.dataclass(frozen=True, eq=False)
class RoomRir:
    """A room impulse response with the room that made it.

    rir : (m,) float64; direct : (m_d,) float64, the direct path alone (image order 0);
    c50 : measured C50 (dB); target : the asked C50; absorption : wall energy absorption;
    rt60_sabine : Sabine's reverberation time of the room (s); room, source, mic : metres;
    max_order : image order used.
    """

    rir: np.ndarray
    direct: np.ndarray
    c50: float
    target: float
    absorption: float
    rt60_sabine: float
    room: tuple[float, float, float]
    source: tuple[float, float, float]
    mic: tuple[float, float, float]
    max_order: int

    def describe(self) -> dict:
        return {"c50_target": self.target, "c50": self.c50, "absorption": self.absorption,
                "rt60_sabine": self.rt60_sabine, "room": list(self.room), "source": list(self.source),
                "mic": list(self.mic), "max_order": self.max_order, "rir_length": int(self.rir.shape[0])}


def _geometry(seed: int):
    rng = np.random.Generator(np.random.PCG64(item_seed("rir_at_c50", seed=seed)))
    room = np.array([rng.uniform(4.0, 9.0), rng.uniform(3.0, 7.0), rng.uniform(2.5, 3.5)])
    for _ in range(1000):
        lo, hi = np.array([0.5, 0.5, 1.2]), np.array([room[0] - 0.5, room[1] - 0.5, 1.8])
        src, mic = rng.uniform(lo, hi), rng.uniform(lo, hi)
        if 1.0 <= np.linalg.norm(src - mic) <= 3.0:
            return room, src, mic
    raise RuntimeError(f"rir_at_c50: no source/microphone pair 1-3 m apart found for seed {seed}.")  # pragma: no cover


def _order(absorption: float) -> int:
    return int(math.ceil(math.log(_LATE_FLOOR) / math.log(1.0 - absorption)))


def _room(room, src, mic, absorption, max_order, sample_rate):
    import pyroomacoustics as pra

    r = pra.ShoeBox(list(room), fs=sample_rate, materials=pra.Material(float(absorption)),
                    max_order=int(max_order), air_absorption=False, ray_tracing=False, use_rand_ism=False)
    r.add_source(list(src))
    r.add_microphone(list(mic))
    return r


@functools.lru_cache(maxsize=8)
def _images(seed: int, sample_rate: int):
    """Per reflection count n, the summed 1/r^2 of the image sources arriving within 50 ms of
    the direct path (early) and after it (late), up to the order the least absorbing wall
    needs; so the energies at absorption a are sum_n w_n (1 - a)^n. Cached per seed (a sweep
    asks one room for several C50s)."""
    room, src, mic = _geometry(seed)
    r = _room(room, src, mic, ABSORPTION_MIN, _order(ABSORPTION_MIN), sample_rate)
    r.image_source_model()
    s = r.sources[0]
    dist = np.linalg.norm(s.images - mic[:, None], axis=0)
    orders = np.asarray(s.orders, dtype=np.int64)
    early = dist / SOUND_SPEED <= dist.min() / SOUND_SPEED + 0.05
    n = int(orders.max()) + 1
    w_early = np.bincount(orders[early], weights=1.0 / dist[early] ** 2, minlength=n)
    w_late = np.bincount(orders[~early], weights=1.0 / dist[~early] ** 2, minlength=n)
    return w_early, w_late


def _image_c50(weights, absorption):
    """C50 of the image-source energies at one absorption (no filters: the search's model)."""
    w_early, w_late = weights
    g = (1.0 - absorption) ** np.arange(w_early.shape[0])
    return 10.0 * math.log10(float(w_early @ g) / float(w_late @ g))


def _absorption_for(weights, target):
    lo, hi = ABSORPTION_MIN, ABSORPTION_MAX
    for _ in range(40):  # C50 rises with absorption
        mid = 0.5 * (lo + hi)
        if _image_c50(weights, mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _sabine(room, absorption):
    v = float(np.prod(room))
    s = 2.0 * (room[0] * room[1] + room[0] * room[2] + room[1] * room[2])
    return 0.161 * v / (absorption * s)


def room_rir_at_c50(c50_db: float, *, seed: int, sample_rate: int = 16000) -> RoomRir:
    """:func:`rir_at_c50` with the room that made the RIR (:class:`RoomRir`)."""
    fn = "rir_at_c50"
    target = check_real(c50_db, "c50_db", fn=fn)
    seed = check_int(seed, "seed", fn=fn, low=0)
    sample_rate = check_int(sample_rate, "sample_rate", fn=fn, low=8000)
    if not C50_MIN <= target <= C50_MAX:
        raise C50Error(f"The 'c50_db' parameter of {fn} must be in [{C50_MIN:g}, {C50_MAX:g}] dB (what every "
                       f"shoebox room of the generator reaches); got {target:g}.")
    return _room_rir(target, seed, sample_rate)


@functools.lru_cache(maxsize=256)
def _room_rir(target: float, seed: int, sample_rate: int) -> RoomRir:
    room, src, mic = _geometry(seed)
    weights = _images(seed, sample_rate)
    reach = (_image_c50(weights, ABSORPTION_MIN), _image_c50(weights, ABSORPTION_MAX))
    if not reach[0] - C50_TOLERANCE <= target <= reach[1] + C50_TOLERANCE:
        raise C50Error(f"rir_at_c50: C50 = {target:g} dB is outside what the room of seed {seed} gives "
                       f"({reach[0]:.1f} to {reach[1]:.1f} dB with wall absorption {ABSORPTION_MIN}-{ABSORPTION_MAX}); "
                       "choose a target in that range or another seed.")
    aim, best = target, None
    for _ in range(6):  # the filters spread energy over the 50 ms boundary: correct the aim
        a = _absorption_for(weights, aim)
        order = _order(a)
        r = _room(room, src, mic, a, order, sample_rate)
        r.compute_rir()
        h = np.asarray(r.rir[0][0], dtype=np.float64)
        got = c50(h, sample_rate)
        if best is None or abs(got - target) < abs(best[1] - target):
            best = (h, got, a, order)
        if abs(got - target) <= 0.25 * C50_TOLERANCE:
            break
        aim += target - got
    h, got, a, order = best
    if abs(got - target) > C50_TOLERANCE:
        raise C50Error(f"rir_at_c50: the room of seed {seed} reaches C50 = {got:.2f} dB at best for the target "
                       f"{target:g} dB (tolerance {C50_TOLERANCE} dB); choose another target or seed.")
    d = _room(room, src, mic, a, 0, sample_rate)
    d.compute_rir()
    direct = np.asarray(d.rir[0][0], dtype=np.float64)
    return RoomRir(h, direct, got, target, a, _sabine(room, a), tuple(map(float, room)), tuple(map(float, src)),
                   tuple(map(float, mic)), order)


def rir_at_c50(c50_db: float, *, seed: int, sample_rate: int = 16000) -> tuple[np.ndarray, float]:
    """A room impulse response whose C50 is within 0.5 dB of ``c50_db``.

    Parameters
    ----------
    c50_db : float, the target clarity in dB, in [C50_MIN, C50_MAX] = [3, 40].
    seed : int >= 0; fixes the room geometry (deterministic; different seeds, different rooms).
    sample_rate : int

    Returns
    -------
    rir : ndarray of shape (m,), float64
    measured_c50 : float, :func:`c50` of ``rir``

    Raises C50Error for a target outside the range or one the seed's room cannot reach.
    """
    r = room_rir_at_c50(c50_db, seed=seed, sample_rate=sample_rate)
    return r.rir.copy(), r.c50


def clipped_fraction(x: np.ndarray, level: float) -> float:
    """Share of the samples of ``x`` that :class:`Clip` (``level`` times the peak) changes."""
    x = np.asarray(x, dtype=np.float64)
    t = float(level) * float(np.max(np.abs(x)))
    return float(np.mean(np.abs(x) > t))


# ----------------------------------------------------------------------------- mixtures on any axis

def degraded_mixture(clean, noise, axis: str, level: float, *, seed: int, noise_snr: float = 30.0,
                     reference: str = "direct", rir_seed: int | None = None, **mix_kwargs: Any) -> Mixture:
    """One mixture on a degradation axis (see the module docstring).

    ``axis="snr"``: :func:`mix_at_snr` at ``level`` dB. ``"c50"``: the speech convolved with
    :func:`rir_at_c50` (``level`` dB, room ``rir_seed``, default one derived from the utterance
    id and ``seed``), then noise at ``noise_snr``. ``"clipping"``: :class:`Clip` at ``level`` times
    the speech's peak, then noise at ``noise_snr``. ``mix_kwargs`` go to :func:`mix_at_snr`.
    """
    fn = "degraded_mixture"
    check_choice(axis, "axis", AXES, fn=fn)
    check_choice(reference, "reference", ("direct", "dry"), fn=fn)
    if axis == "snr":
        return mix_at_snr(clean, noise, level, seed=seed, **mix_kwargs)
    noise_snr = check_real(noise_snr, "noise_snr", fn=fn)
    uid = mix_kwargs.get("utterance_id") or getattr(clean, "id", None)
    if axis == "clipping":
        level = check_real(level, "level", fn=fn, low=0.0, high=1.0, low_open=True)
        mix = mix_at_snr(clean, noise, noise_snr, seed=seed, degradations=[Clip(level)], **mix_kwargs)
        frac = clipped_fraction(mix.clean, level)
        return dataclasses.replace(mix, info={**mix.info, "axis": axis, "level": level, "clipped_fraction": frac})
    if rir_seed is None:
        rir_seed = item_seed("room", uid if uid is not None else "", seed=seed) % (2**63)
    room = room_rir_at_c50(level, seed=rir_seed, sample_rate=mix_kwargs.get("sample_rate", 16000))
    mix = mix_at_snr(clean, noise, noise_snr, seed=seed, degradations=[Reverb(room.rir, name="c50")], **mix_kwargs)
    info = {**mix.info, "axis": axis, "level": float(level), "room": room.describe(), "rir_seed": int(rir_seed),
            "reference": reference}
    if reference == "dry":
        return dataclasses.replace(mix, info=info)
    sr = mix.info["sample_rate"]
    ref = Reverb(room.direct, name="direct_path")(mix.clean.astype(np.float64), sr)
    gain, _ = normalise_gain(ref, sr, mix.info["lufs_target"], f"direct-path reference of {uid!r}")
    return dataclasses.replace(mix, clean=(gain * ref).astype(np.float32), info=info)


class DegradationSweep(Sequence):
    """Lazy sweep over (utterance, noise type, level) of one axis; ``sweep[i]`` mixes item i.

    ``keys`` lists (utterance id, noise id, level); ``utterances`` and ``noises`` map ids to
    records; ``levels`` is the grid; ``field`` is the condition name in the store ("c50",
    "clipping"). Mixing settings are in ``mix_kwargs``.
    """

    def __init__(self, utterances, noises, axis, levels, *, seed, noise_snr, reference, mix_kwargs):
        fn = "degradation_sweep"
        check_choice(axis, "axis", AXES[1:], fn=fn)
        self.axis = self.field = axis
        self.seed = check_int(seed, "seed", fn=fn, low=0)
        self.levels = [check_real(v, "levels", fn=fn) for v in levels]
        if not self.levels:
            raise ValueError(f"The 'levels' parameter of {fn} must hold at least one level; got none.")
        self.noise_snr = check_real(noise_snr, "noise_snr", fn=fn)
        self.reference = check_choice(reference, "reference", ("direct", "dry"), fn=fn) or reference
        self.mix_kwargs = dict(mix_kwargs)
        self.mix_kwargs.setdefault("sample_rate", 16000)
        sr = self.mix_kwargs["sample_rate"]
        self.utterances = {u.id: u for u in audio_records(utterances, "utterances", sr)}
        self.noises = {r.id: r for r in audio_records(noises, "noises", sr)}
        self.skipped: list[str] = []
        self.num_shards = 1
        self.keys = [(u, t, v) for u in self.utterances for t in self.noises for v in self.levels]

    def mixture(self, uid: str, nid: str, level: float) -> Mixture:
        return degraded_mixture(self.utterances[uid], self.noises[nid], self.axis, level, seed=self.seed,
                                noise_snr=self.noise_snr, reference=self.reference, **self.mix_kwargs)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.mixture(*self.keys[i])


def degradation_sweep(utterances, noises, axis: str, levels: Sequence[float], *, seed: int,
                      noise_snr: float = 30.0, reference: str = "direct", **mix_kwargs: Any):
    """All mixtures of utterances x noise types x levels of ``axis``, computed lazily.

    ``axis="snr"`` returns :func:`torch_bridge.mixing.snr_sweep` (levels = SNRs); the other axes a
    :class:`DegradationSweep`. ``mix_kwargs`` go to :func:`mix_at_snr` (duration, short, ...).
    """
    check_choice(axis, "axis", AXES, fn="degradation_sweep")
    if axis == "snr":
        from .mixing import snr_sweep

        return snr_sweep(utterances, noises, levels, seed=seed, **mix_kwargs)
    return DegradationSweep(utterances, noises, axis, levels, seed=seed, noise_snr=noise_snr,
                            reference=reference, mix_kwargs=mix_kwargs)
