"""Reverberation at a target C50, hard clipping and mixtures on every degradation axis."""
import numpy as np
import pytest

pytest.importorskip("pyroomacoustics")

from torch_bridge import degrade as D  # noqa: E402
from torch_bridge.mixing import Clip, loudness, mix_at_snr  # noqa: E402

SR = 16000


def c50_reference(h, sr=SR):
    """Plain float64 C50: energy up to 50 ms after the largest tap over the energy after it."""
    h = [float(v) for v in h]
    peak = max(range(len(h)), key=lambda i: abs(h[i]))
    split = peak + round(0.05 * sr)
    early = sum(v * v for v in h[:split])
    late = sum(v * v for v in h[split:])
    return 10.0 * np.log10(early / late)


def test_c50_known_answer():
    h = np.zeros(4000)
    h[100] = 1.0          # direct path
    h[100 + 400] = 0.5    # 25 ms: early
    h[100 + 1600] = 0.5   # 100 ms: late
    assert D.c50(h, SR) == pytest.approx(10 * np.log10(1.25 / 0.25), abs=1e-12)
    with pytest.raises(ValueError, match="no energy after"):
        D.c50(np.r_[1.0, np.zeros(10)], SR)


@pytest.mark.parametrize("target,seed", [(4.0, 0), (12.0, 1), (25.0, 2)])
def test_rir_at_c50_hits_target(target, seed):
    rir, measured = D.rir_at_c50(target, seed=seed)
    assert rir.ndim == 1 and rir.dtype == np.float64 and np.all(np.isfinite(rir))
    independent = c50_reference(rir)
    assert measured == pytest.approx(independent, abs=1e-9)
    assert abs(independent - target) <= 0.5


def test_rir_deterministic_and_rooms_differ():
    a, ca = D.rir_at_c50(10.0, seed=7)
    D._room_rir.cache_clear()
    D._images.cache_clear()
    b, cb = D.rir_at_c50(10.0, seed=7)
    assert np.array_equal(a, b) and ca == cb
    r7, r8 = D.room_rir_at_c50(10.0, seed=7), D.room_rir_at_c50(10.0, seed=8)
    assert r7.room != r8.room and r7.source != r8.source
    # one seed, one geometry at every C50: the same direct path, more absorption for more clarity
    r7b = D.room_rir_at_c50(20.0, seed=7)
    assert r7b.room == r7.room and np.array_equal(r7b.direct, r7.direct)
    assert r7b.absorption > r7.absorption


@pytest.mark.parametrize("bad", [2.0, -10.0, 41.0, float("nan")])
def test_rir_bad_targets(bad):
    with pytest.raises((D.C50Error, ValueError), match="c50_db"):
        D.rir_at_c50(bad, seed=0)


def test_clip_operator():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000)
    x[17] = -5.0  # the peak is negative: the threshold is relative to |x|
    for level in (1.0, 0.5, 0.1):
        y = Clip(level)(x, SR)
        t = level * 5.0
        expect = np.array([min(max(v, -t), t) for v in x])
        assert np.array_equal(y, expect)
        assert np.array_equal(Clip(level)(-x, SR), -y)  # symmetric
        assert D.clipped_fraction(x, level) == pytest.approx(np.mean(np.abs(x) > t))
    assert np.array_equal(Clip(1.0)(x, SR), x)
    with pytest.raises(ValueError, match="level"):
        Clip(0.0)(x, SR)


def _speech(n=SR * 2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (env * (np.sin(2 * np.pi * 220 * t) + 0.3 * rng.standard_normal(n))).astype(np.float32)


def test_degraded_mixtures_keep_the_loudness_rule():
    x, v = _speech(), np.random.default_rng(1).standard_normal(SR * 3).astype(np.float32)
    kw = dict(seed=3, duration=None, utterance_id="u", noise_id="n")
    for axis, level in (("c50", 6.0), ("clipping", 0.2), ("snr", 5.0)):
        m = D.degraded_mixture(x, v, axis, level, noise_snr=20.0, **kw)
        assert loudness(m.noisy.astype(np.float64), SR) == pytest.approx(-23.0, abs=1e-2)
        assert loudness(m.clean.astype(np.float64), SR) == pytest.approx(-23.0, abs=1e-2)
        assert np.array_equal(m.noisy, m.speech + m.noise)
        if axis != "snr":
            assert m.info["snr_achieved_db"] == pytest.approx(20.0, abs=1e-3)
            assert m.info["axis"] == axis and m.info["level"] == level
    clip = D.degraded_mixture(x, v, "clipping", 0.2, noise_snr=20.0, **kw)
    plain = mix_at_snr(x, v, 20.0, **kw)
    assert np.array_equal(clip.clean, plain.clean)  # the clipping axis's reference is the clean speech
    assert clip.info["clipped_fraction"] > 0.05


def test_reverb_reference_setting():
    x, v = _speech(), np.random.default_rng(1).standard_normal(SR * 3).astype(np.float32)
    kw = dict(seed=3, duration=None, utterance_id="u", noise_id="n", noise_snr=30.0)
    dry = D.degraded_mixture(x, v, "c50", 6.0, reference="dry", **kw)
    direct = D.degraded_mixture(x, v, "c50", 6.0, reference="direct", **kw)
    assert np.array_equal(dry.noisy, direct.noisy)
    assert np.array_equal(dry.clean, mix_at_snr(x, v, 30.0, seed=3, duration=None, utterance_id="u",
                                                noise_id="n").clean)
    room = D.room_rir_at_c50(6.0, seed=direct.info["rir_seed"])
    assert direct.info["room"]["c50"] == pytest.approx(room.c50)
    # the direct-path reference is the clean speech through the direct path alone, aligned on its peak
    from scipy.signal import fftconvolve

    lag = int(np.argmax(np.abs(room.direct)))
    ref = fftconvolve(dry.clean.astype(np.float64), room.direct)[lag:lag + x.shape[0]]
    corr = np.dot(ref, direct.clean) / np.linalg.norm(ref) / np.linalg.norm(direct.clean)
    assert corr > 0.99999
    # the reverberant speech correlates less with the reference than the reference with the dry speech
    c_dry = np.dot(dry.clean, direct.clean) / np.linalg.norm(dry.clean) / np.linalg.norm(direct.clean)
    c_rev = np.dot(direct.speech, direct.clean) / np.linalg.norm(direct.speech) / np.linalg.norm(direct.clean)
    assert c_rev < c_dry


def test_degradation_sweep_items():
    utts = {"a": _speech(seed=0), "b": _speech(seed=1)}
    noises = {"white": np.random.default_rng(2).standard_normal(SR * 3).astype(np.float32)}
    sw = D.degradation_sweep(utts, noises, "clipping", [1.0, 0.3], seed=0, duration=None)
    assert sw.keys == [("a", "white", 1.0), ("a", "white", 0.3), ("b", "white", 1.0), ("b", "white", 0.3)]
    m = sw[1]
    assert m.info["level"] == 0.3 and m.info["utterance_id"] == "a"
    snr = D.degradation_sweep(utts, noises, "snr", [0.0], seed=0, duration=None)
    assert snr[0].info["snr_target_db"] == 0.0
    with pytest.raises(ValueError, match="axis"):
        D.degradation_sweep(utts, noises, "reverb", [1.0], seed=0)
