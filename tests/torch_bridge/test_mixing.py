"""mix_at_snr / snr_sweep / windows: exact SNR, loudness checked with pyloudnorm's own meter,
determinism across order, shards and workers, window boundaries, and clear errors."""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import random

import numpy as np
import pyloudnorm
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torch_bridge.data.record import AudioError, AudioRecord
from torch_bridge.mixing import (
    DEFAULT_SNRS,
    MUSE_CHUNK,
    Clip,
    ClippingError,
    Reverb,
    ShortUtteranceError,
    content_id,
    item_seed,
    mix_at_snr,
    snr_sweep,
    synthetic_rir,
    window_starts,
    windows,
)

SR = 16000


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """Voiced syllables (harmonics of a wandering f0 under a 4 Hz envelope) separated by
    stretches of exact digital zeros, as flite/espeak output has."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 110 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) ** 2
    env[: SR // 5] = 0.0
    env[-SR // 5:] = 0.0
    return (0.2 * x * env).astype(np.float32)


def noise_like(seconds: float, seed: int) -> np.ndarray:
    return (0.05 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def meter_lufs(x: np.ndarray) -> float:
    return pyloudnorm.Meter(SR).integrated_loudness(np.asarray(x, dtype=np.float64))


def ref_active_power(x: np.ndarray) -> float:
    """Readable reference for power='active': 20 ms frames within 40 dB of the loudest."""
    x = np.asarray(x, dtype=np.float64)
    flen = SR // 50
    frames = [x[i * flen:(i + 1) * flen] for i in range(len(x) // flen)]
    frames[-1] = x[(len(x) // flen - 1) * flen:]
    energies = [np.mean(f ** 2) for f in frames]
    keep = [f for f, e in zip(frames, energies) if e >= max(energies) * 1e-4]
    return float(np.mean(np.concatenate(keep) ** 2))


@pytest.fixture(scope="module")
def utt():
    return speech_like(3.0, 0)


@pytest.fixture(scope="module")
def noi():
    return noise_like(12.0, 1)


def mix(clean, noise, snr, **kw):
    kw.setdefault("seed", 7)
    kw.setdefault("utterance_id", "u1")
    kw.setdefault("noise_id", "n1")
    return mix_at_snr(clean, noise, snr, **kw)


# ---------------------------------------------------------------------------- exactness

@pytest.mark.parametrize("snr", [-10, -2.5, 0, 13, 30])
def test_snr_exact_plain_power(utt, noi, snr):
    m = mix(utt, noi, snr)
    s = m.speech.astype(np.float64)
    n = m.noise.astype(np.float64)
    achieved = 10 * np.log10(np.mean(s ** 2) / np.mean(n ** 2))
    assert abs(achieved - snr) < 0.01
    assert abs(m.info["snr_achieved_db"] - achieved) < 1e-9
    assert m.info["snr_target_db"] == snr


@pytest.mark.parametrize("snr", [-5, 20])
def test_snr_exact_active_power(utt, noi, snr):
    m = mix(utt, noi, snr, power="active")
    achieved = 10 * np.log10(ref_active_power(m.speech) / np.mean(m.noise.astype(np.float64) ** 2))
    assert abs(achieved - snr) < 0.01
    plain = 10 * np.log10(np.mean(m.speech.astype(np.float64) ** 2) / np.mean(m.noise.astype(np.float64) ** 2))
    assert plain < snr - 0.5  # the pauses count in plain power, not in active power


def test_noisy_is_exactly_speech_plus_noise_float32(utt, noi):
    m = mix(utt, noi, 3)
    for a in (m.noisy, m.speech, m.noise, m.clean):
        assert a.dtype == np.float32 and a.shape == utt.shape
    assert np.array_equal(m.noisy, m.speech + m.noise)


@pytest.mark.parametrize("snr", [-10, 10, 30])
def test_loudness_checked_with_pyloudnorm_meter(utt, noi, snr):
    m = mix(utt, noi, snr)
    assert abs(meter_lufs(m.noisy) - (-23.0)) < 0.1
    assert abs(meter_lufs(m.clean) - (-23.0)) < 0.1
    assert abs(m.info["lufs_after"] - meter_lufs(m.noisy)) < 1e-6
    assert abs(m.info["lufs_before"] - meter_lufs(utt.astype(np.float64) + m.info["noise_gain"]
                                                   * (m.noise / m.info["mix_gain"] / m.info["noise_gain"]))) < 0.01


def test_other_loudness_target(utt, noi):
    m = mix(utt, noi, 5, target_lufs=-30.0)
    assert abs(meter_lufs(m.noisy) + 30.0) < 0.1


def test_clean_reference_is_the_trimmed_utterance_scaled(utt, noi):
    m = mix(utt, noi, 0)
    ratio = m.info["clean_gain"]
    np.testing.assert_allclose(m.clean, utt.astype(np.float64) * ratio, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float64, np.int16])
def test_input_dtypes_give_float32_and_the_same_mixture(utt, noi, dtype):
    ref = mix(utt, noi, 5)
    scale = 32767 if dtype == np.int16 else 1
    other = mix((utt * scale).astype(dtype), (noi * scale).astype(dtype), 5)
    assert other.noisy.dtype == np.float32 and other.clean.dtype == np.float32
    if dtype == np.float64:  # float32 values widened exactly: bit-identical output
        assert other.noisy.tobytes() == ref.noisy.tobytes()
    else:  # int16 quantises the input; loudness normalisation removes the scale
        np.testing.assert_allclose(other.noisy, ref.noisy, atol=2e-4)
    assert abs(other.info["snr_achieved_db"] - 5) < 0.01


@settings(max_examples=15, deadline=None)
@given(snr=st.floats(-20, 40), seed=st.integers(0, 2**31 - 1))
def test_snr_property(utt, noi, snr, seed):
    m = mix(utt, noi, snr, seed=seed)
    assert abs(m.info["snr_achieved_db"] - snr) < 0.01
    assert np.array_equal(m.noisy, m.speech + m.noise)


# ---------------------------------------------------------------------------- trimming, offsets

def test_center_trim_to_duration(noi):
    long = speech_like(5.0, 3)
    m = mix(long, noise_like(6.0, 2), 5, duration=2.0)
    start = (len(long) - 2 * SR) // 2
    assert m.info["trim_start"] == start and m.info["trim_action"] == "center-trim"
    np.testing.assert_allclose(m.clean / m.info["clean_gain"], long[start:start + 2 * SR], rtol=1e-5, atol=1e-6)


def test_short_policies(utt, noi):
    keep = mix(utt, noi, 5, duration=4.0, short="keep")
    assert keep.noisy.shape == utt.shape and keep.info["trim_action"] == "keep"
    pad = mix(utt, noi, 5, duration=4.0, short="pad")
    assert pad.noisy.shape == (4 * SR,) and pad.info["trim_action"] == "pad"
    left = (4 * SR - len(utt)) // 2
    assert not np.any(pad.speech[:left]) and not np.any(pad.speech[left + len(utt):])
    assert np.any(pad.noise[:left])  # noise covers the padding
    with pytest.raises(ShortUtteranceError, match="short='skip'"):
        mix(utt, noi, 5, duration=4.0, short="skip")


def test_offset_seeded_and_shared_across_snrs(utt, noi):
    a = mix(utt, noi, 0)
    b = mix(utt, noi, 20)
    assert a.info["noise_offset"] == b.info["noise_offset"]
    np.testing.assert_allclose(a.noise / a.info["mix_gain"] / a.info["noise_gain"],
                               b.noise / b.info["mix_gain"] / b.info["noise_gain"], rtol=1e-5, atol=1e-7)
    other = [mix(utt, noi, 0, seed=s).info["noise_offset"] for s in range(5)]
    assert len(set(other)) > 1
    per = {mix(utt, noi, s, offset_per_snr=True).info["noise_offset"] for s in (0, 1, 2, 3)}
    assert len(per) > 1


def test_noise_segment_is_the_recording_at_the_offset(utt, noi):
    m = mix(utt, noi, 0)
    off = m.info["noise_offset"]
    seg = noi[off:off + len(utt)].astype(np.float64)
    np.testing.assert_allclose(m.noise / (m.info["mix_gain"] * m.info["noise_gain"]), seg, rtol=1e-5, atol=1e-7)


def test_short_noise_is_looped_or_an_error(utt):
    short_noise = noise_like(1.0, 5)
    m = mix(utt, short_noise, 0)
    assert m.info["noise_looped"]
    raw = m.noise.astype(np.float64) / (m.info["mix_gain"] * m.info["noise_gain"])
    np.testing.assert_allclose(raw[:SR], raw[SR:2 * SR], rtol=1e-5, atol=1e-7)
    with pytest.raises(AudioError, match="loop_noise=False"):
        mix(utt, short_noise, 0, loop_noise=False)


# ---------------------------------------------------------------------------- determinism

def test_bit_identical_across_runs(utt, noi):
    a, b = mix(utt, noi, 4), mix(utt, noi, 4)
    for k in ("noisy", "speech", "noise", "clean"):
        assert getattr(a, k).tobytes() == getattr(b, k).tobytes()
    assert a.info == b.info
    assert json.loads(json.dumps(a.info)) == a.info  # metadata is plain JSON for manifests


def test_item_seed_is_stable():
    # Pinned: a change here changes every mixture the project has ever written.
    assert item_seed("p232_001", "street", 5, seed=0) == item_seed("p232_001", "street", 5.0, seed=0)
    # The documented rule, restated: BLAKE2b-64 of the 0x1f-joined parts, little-endian.
    digest = hashlib.blake2b(b"p232_001\x1fstreet\x1f5.0\x1fseed=0", digest_size=8).digest()
    assert item_seed("p232_001", "street", 5, seed=0) == int.from_bytes(digest, "little")
    assert item_seed("p232_001", "street", seed=0) == 15294497789276976951
    assert item_seed("a", "b", seed=0) != item_seed("a", "b", seed=1)


def _sweep_inputs():
    utts = [AudioRecord(id=f"u{i}", speaker="s", waveform=speech_like(1.2 + 0.3 * i, i), sample_rate=SR)
            for i in range(3)]
    noises = {"white": noise_like(4.0, 10), "other": noise_like(2.5, 11)}
    return utts, noises


def _digest(m):
    return (m.info["utterance_id"], m.info["noise_id"], m.info["snr_target_db"]), m.noisy.tobytes() + m.clean.tobytes()


def _sweep_item(args):
    shard, num_shards, i = args
    utts, noises = _sweep_inputs()
    return _digest(snr_sweep(utts, noises, [-5, 0, 10], seed=3, shard=shard, num_shards=num_shards)[i])


def test_sweep_independent_of_order_shards_and_workers():
    utts, noises = _sweep_inputs()
    full = snr_sweep(utts, noises, [-5, 0, 10], seed=3)
    assert len(full) == 3 * 2 * 3
    ref = dict(_digest(m) for m in full)
    order = list(range(len(full)))
    random.Random(0).shuffle(order)
    assert dict(_digest(full[i]) for i in order) == ref
    shards = [snr_sweep(utts, noises, [-5, 0, 10], seed=3, shard=k, num_shards=4) for k in range(4)]
    assert sorted(k for s in shards for k in s.keys) == sorted(full.keys)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        assert dict(pool.map(_digest, (full[i] for i in order))) == ref
    jobs = [(k, 4, i) for k in range(4) for i in range(len(shards[k]))]
    # spawn, not fork: JAX may already be running threads in this test process
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert dict(pool.map(_sweep_item, jobs)) == ref


def test_sweep_defaults_and_noise_types():
    assert DEFAULT_SNRS == tuple(range(-10, 31)) and len(DEFAULT_SNRS) == 41
    utts, noises = _sweep_inputs()
    sw = snr_sweep(utts, noises, seed=0, noise_types=["white"])
    assert len(sw) == 3 * 41 and {k[1] for k in sw.keys} == {"white"}
    with pytest.raises(KeyError, match="Unknown noise type.*'pink'.*available"):
        snr_sweep(utts, noises, seed=0, noise_types=["pink"])


def test_sweep_skip_policy_is_recorded():
    utts, noises = _sweep_inputs()
    sw = snr_sweep(utts, noises, [0], seed=0, duration=1.6, short="skip")
    assert sw.skipped == ["u0", "u1"]
    assert {k[0] for k in sw.keys} == {"u2"}
    assert all(m.noisy.shape == (int(1.6 * SR),) for m in sw)


# ---------------------------------------------------------------------------- degradations, peaks

def test_reverb_keeps_length_and_exact_snr(utt, noi):
    rir = synthetic_rir(0.4, seed=1)
    m = mix(utt, noi, 5, degradations=[Reverb(rir)])
    dry = mix(utt, noi, 5)
    assert m.noisy.shape == utt.shape
    assert abs(m.info["snr_achieved_db"] - 5) < 0.01
    assert not np.allclose(m.speech / np.abs(m.speech).max(), dry.speech / np.abs(dry.speech).max(), atol=1e-2)
    assert m.info["degradations"] == [{"name": "reverb", "rir_length": len(rir)}]
    # a unit impulse response changes nothing but the level
    ident = mix(utt, noi, 5, degradations=[Reverb(np.array([1.0, 0.0]))])
    np.testing.assert_allclose(ident.speech, dry.speech, rtol=1e-5, atol=1e-6)


def test_clip_degradation(utt, noi):
    m = mix(utt, noi, 30, degradations=[Clip(0.3)])
    s = m.speech / m.info["mix_gain"]
    assert np.max(np.abs(s)) <= 0.3 * np.max(np.abs(utt)) * (1 + 1e-5)
    with pytest.raises(ValueError, match="'level' parameter of Clip"):
        mix(utt, noi, 30, degradations=[Clip(1.5)])


def test_peak_over_full_scale_is_reported_never_clipped(noi):
    spiky = np.zeros(3 * SR, dtype=np.float32)
    spiky[:: SR // 4] = 0.5
    spiky[SR // 2:SR // 2 + 400] = 0.01
    m = mix(spiky, noi, 30, target_lufs=-5.0)
    assert m.info["clipped"] and m.info["peak"] > 1.0
    assert np.max(np.abs(m.noisy)) == pytest.approx(m.info["peak"])
    scaled = mix(spiky, noi, 30, target_lufs=-5.0, on_clip="scale")
    assert scaled.info["peak_scaled"] and np.max(np.abs(scaled.noisy)) <= 0.99 + 1e-6
    assert np.array_equal(scaled.noisy, scaled.speech + scaled.noise)
    assert scaled.info["lufs_after"] < -5.0
    with pytest.raises(ClippingError, match="dBFS"):
        mix(spiky, noi, 30, target_lufs=-5.0, on_clip="error")


# ---------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("which", ["clean", "noise"])
def test_silent_input_is_an_error(utt, noi, which):
    args = {"clean": utt, "noise": noi}
    args[which] = np.zeros_like(args[which])
    with pytest.raises(AudioError, match="silent"):
        mix(args["clean"], args["noise"], 0)


def test_silent_noise_segment_is_an_error(utt):
    gappy = np.zeros(10 * SR, dtype=np.float32)
    gappy[:10] = 0.1
    with pytest.raises(AudioError, match="segment .* is silent"):
        for seed in range(20):  # most offsets land in the silent stretch
            mix(utt, gappy, 0, seed=seed)


def test_nan_stereo_and_wrong_rate(utt, noi):
    bad = utt.copy()
    bad[100] = np.nan
    with pytest.raises(AudioError, match="finite.*index 100"):
        mix(bad, noi, 0)
    with pytest.raises(AudioError, match=r"mono.*\(48000, 2\)"):
        mix(np.stack([utt, utt], axis=1), noi, 0)
    rec = AudioRecord(id="u8k", speaker=None, waveform=utt, sample_rate=8000)
    with pytest.raises(AudioError, match="8000 Hz"):
        mix_at_snr(rec, noi, 0, seed=0, noise_id="n")
    with pytest.raises(AudioError, match="400 ms"):
        mix(utt[SR:SR + 3000], noi, 0)
    with pytest.raises(ValueError, match="'snr_db' parameter"):
        mix(utt, noi, float("nan"))
    with pytest.raises(ValueError, match="'short' parameter"):
        mix(utt, noi, 0, short="truncate")


# ---------------------------------------------------------------------------- windows

def test_window_boundaries():
    W = MUSE_CHUNK
    assert window_starts(W, mode="all") == [0]
    assert window_starts(2 * W - 1, mode="all") == [0]
    assert window_starts(2 * W, mode="all") == [0, W]
    assert window_starts(2 * W, mode="all", hop=W // 2) == [0, W // 2, W]
    assert window_starts(W + 10, mode="center") == [5]
    assert window_starts(W + 11, mode="center") == [5]
    assert window_starts(10 * SR, mode="first") == [0]
    assert window_starts(W - 10, mode="center") == [-5]


def test_windows_content_and_padding():
    W = MUSE_CHUNK
    x = np.arange(2 * W + 100, dtype=np.float32)
    w = windows(x, mode="all")
    assert w.shape == (2, W) and w[1, 0] == W and w[1, -1] == 2 * W - 1
    c = windows(x, mode="center")
    assert c.shape == (1, W) and c[0, 0] == (len(x) - W) // 2
    batch = windows(np.stack([x, -x]), mode="first")
    assert batch.shape == (2, 1, W) and np.array_equal(batch[1, 0], -x[:W])
    short = np.ones(W - 10, dtype=np.float32)
    p = windows(short, mode="center")
    assert p.shape == (1, W) and p[0, :5].sum() == 0 and p[0, -5:].sum() == 0 and p[0, 5:-5].all()
    assert windows(short, mode="first")[0, -10:].sum() == 0
    with pytest.raises(ValueError, match="pad_short=True"):
        windows(short, pad_short=False)
    with pytest.raises(ValueError, match="'mode' parameter"):
        windows(x, mode="last")


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5 * MUSE_CHUNK), size=st.integers(1, 40000), hop=st.integers(1, 40000),
       mode=st.sampled_from(["first", "center", "all"]))
def test_window_starts_property(n, size, hop, mode):
    starts = window_starts(n, size=size, mode=mode, hop=hop)
    assert len(starts) >= 1
    if n >= size:
        assert all(0 <= s <= n - size for s in starts)
        if mode == "all":
            assert starts == list(range(0, n - size + 1, hop))
            assert starts[-1] + hop > n - size  # no further full window was dropped
    else:
        assert starts == [-((size - n) // 2) if mode == "center" else 0]


def test_arrays_without_ids_use_content_hashes(utt, noi):
    """Issue 13: the call a user writes first works; its ids are content hashes, so the
    mixture depends on the signals, not on call order, and explicit ids still work."""
    other = noise_like(12.0, 5)
    a = mix_at_snr(utt, noi, 5, sample_rate=16000, seed=3)
    mix_at_snr(utt, other, 5, sample_rate=16000, seed=3)  # a different call in between
    b = mix_at_snr(utt.copy(), noi.copy(), 5, sample_rate=16000, seed=3)
    np.testing.assert_array_equal(a.noisy, b.noisy)
    assert a.info["utterance_id"] == content_id(utt) and a.info["noise_id"] == content_id(noi)
    assert content_id(utt).startswith("sha256:") and content_id(utt) != content_id(noi)
    assert content_id(utt.astype(np.float64)) == content_id(utt)  # the float32 samples are hashed
    c = mix_at_snr(utt, other, 5, sample_rate=16000, seed=3)
    assert c.info["noise_id"] != a.info["noise_id"]
    explicit = mix(utt, noi, 5, seed=3)
    assert explicit.info["utterance_id"] == "u1" and explicit.info["noise_id"] == "n1"
    np.testing.assert_array_equal(explicit.noisy, mix(utt, noi, 5, seed=3).noisy)


# ---------------------------------------------------------------------------- loudness from block energies

def _pyloudnorm_normalise_gain(x, target):
    """The iteration normalise_gain ran before it filtered once: pyloudnorm on g x at every trial gain."""
    before = meter_lufs(x)
    gain = 10.0 ** ((target - before) / 20.0)
    for _ in range(4):
        now = meter_lufs(gain * x)
        if abs(now - target) < 1e-3:
            break
        gain *= 10.0 ** ((target - now) / 20.0)
    return gain, before


def _gate_signals():
    rng = np.random.default_rng(7)
    out = {"white": rng.standard_normal(3 * SR) * 0.1, "speech": speech_like(6.0, 3).astype(np.float64),
           "short": rng.standard_normal(int(0.45 * SR)) * 0.3}
    quiet = rng.standard_normal(8 * SR)
    quiet[: 4 * SR] *= 10 ** (-66 / 20)  # first half about -66 LUFS, second about 0 dB louder
    out["near_gate"] = quiet * 10 ** (-3 / 20)
    return out


@pytest.mark.parametrize("name", ["white", "speech", "short", "near_gate"])
@pytest.mark.parametrize("gain", [1.0, 0.37, 10 ** (-6 / 20), 10 ** (-10 / 20), 3.1])
def test_block_loudness_is_pyloudnorm_integrated_loudness(name, gain):
    """gated_loudness(block_energies(x), g**2) equals pyloudnorm's meter on g x within 1e-9 LU,
    including gains that move the quiet half of near_gate across the -70 LUFS gate; at g = 1
    it is the same float64 value (same filter, block bounds and sums)."""
    from torch_bridge.mixing import block_energies, gated_loudness, loudness

    x = _gate_signals()[name]
    z = block_energies(x, SR)
    ref = meter_lufs(gain * x)
    got = gated_loudness(z, gain * gain)
    assert abs(got - ref) <= 1e-9, (name, gain, got, ref)
    if gain == 1.0:
        assert got == ref and loudness(x, SR) == ref


def test_gain_moves_blocks_across_the_absolute_gate():
    """The test above would be trivial if no gain changed the gated set: check it does."""
    from torch_bridge.mixing import block_energies

    z = block_energies(_gate_signals()["near_gate"], SR)
    levels = -0.691 + 10 * np.log10(z)
    for g_db in (-6, -10):
        assert np.sum(levels >= -70) != np.sum(levels + g_db >= -70)


def test_normalise_gain_follows_the_pyloudnorm_iteration():
    from torch_bridge.mixing import normalise_gain

    for name, x in _gate_signals().items():
        for target in (-23.0, -40.0):
            gain, before = normalise_gain(x, SR, target, name)
            ref_gain, ref_before = _pyloudnorm_normalise_gain(x, target)
            assert before == ref_before
            assert abs(gain / ref_gain - 1.0) < 1e-12, (name, target)
            assert abs(meter_lufs(gain * x) - target) < 1e-3


def test_normalise_gain_errors_for_short_and_silent_input():
    from torch_bridge.mixing import normalise_gain

    with pytest.raises(AudioError, match="needs more than one 400 ms block"):
        normalise_gain(np.ones(int(0.4 * SR)), SR, -23.0, "tiny signal")
    with pytest.raises(AudioError, match="tiny signal has loudness -inf LUFS"):
        normalise_gain(np.full(SR, 1e-6), SR, -23.0, "tiny signal")


def test_mixtures_equal_those_of_pyloudnorm_normalisation(monkeypatch, utt, noi):
    """mix_at_snr with the filter-once loudness gives the mixtures (and info) that the
    pyloudnorm-per-gain normalisation gives, bit for bit on these items."""
    import collections

    import torch_bridge.mixing as M

    keys = [(s, seed) for s in (-10, 0, 5, 30) for seed in (0, 3)]
    new = [mix_at_snr(utt, noi, s, seed=seed) for s, seed in keys]
    monkeypatch.setattr(M, "_CLEAN_MEMO", collections.OrderedDict())
    monkeypatch.setattr(M, "normalise_gain", lambda x, sr, target, name: _pyloudnorm_normalise_gain(x, target))
    monkeypatch.setattr(M, "loudness", lambda x, sr, name="signal": meter_lufs(x))
    old = [mix_at_snr(utt, noi, s, seed=seed) for s, seed in keys]
    for a, b in zip(new, old):
        for field in ("noisy", "speech", "noise", "clean"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert a.info == b.info


def test_clean_reference_is_normalised_once_per_utterance(monkeypatch, utt, noi):
    import collections

    import torch_bridge.mixing as M

    monkeypatch.setattr(M, "_CLEAN_MEMO", collections.OrderedDict())
    calls = []
    real = M.block_energies
    monkeypatch.setattr(M, "block_energies", lambda x, sr, name="signal": calls.append(name) or real(x, sr, name=name))
    sweep = snr_sweep({"u": utt}, {"a": noi, "b": noi[::-1].copy()}, [-5, 0, 5], seed=0)
    mixes = list(sweep)
    # clean: normalise + its loudness after, once; each of the 6 items: its normalisation + lufs_after
    assert len(calls) == 2 + 2 * len(mixes)
    mixes[0].clean[:] = 0.0  # a caller writing into one mixture's clean does not reach the others
    assert np.any(mixes[1].clean) and np.array_equal(mixes[1].clean, mix_at_snr(utt, noi, 0, seed=0).clean)
    for k in range(20):  # bounded
        M._clean_reference(utt.astype(np.float64) * (1 + k), SR, -23.0, f"u{k}")
    assert len(M._CLEAN_MEMO) == M._CLEAN_MEMO_SIZE


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_loudness_of_non_finite_audio_is_an_error_not_silence(bad):
    """A NaN/inf sample is named as such (with its position), not reported as a silent signal."""
    from torch_bridge.mixing import AudioError, block_energies, loudness, normalise_gain

    x = np.random.default_rng(0).standard_normal(16000) * 0.1
    x[5] = bad
    for call in (lambda: loudness(x, 16000, name="probe signal"),
                 lambda: block_energies(x, 16000, name="probe signal"),
                 lambda: normalise_gain(x, 16000, -23.0, "probe signal")):
        with pytest.raises(AudioError, match=r"probe signal holds non-finite samples \(first at sample 5"):
            call()
