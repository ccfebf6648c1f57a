"""jaxprobe.audio.pesq.wideband_pesq against the pesq package called directly on known pairs, and
its handling of pairs PESQ cannot score (excluded with a reason, never a number)."""
from __future__ import annotations

import numpy as np
import pytest
from pesq import pesq

from jaxprobe.audio.pesq import pesq_pool, wideband_pesq, wideband_pesq_async


def _speechlike(rng, seconds=2.0, fs=16000):
    """Amplitude-modulated harmonic tone bursts: PESQ's voice-activity detector sees utterances."""
    t = np.arange(int(seconds * fs)) / fs
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    x = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / fs) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 2
    return (0.2 * x * env + 1e-4 * rng.standard_normal(t.size)).astype(np.float64)


def test_matches_pesq_package_on_known_pairs(rng):
    clean = np.stack([_speechlike(rng), _speechlike(rng, 2.0)])
    noisy = clean + np.stack([0.001 * rng.standard_normal(clean.shape[1]), 0.1 * rng.standard_normal(clean.shape[1])])
    got = wideband_pesq(clean, noisy)
    assert got.n_excluded == 0
    want = [pesq(16000, c, n, "wb") for c, n in zip(clean, noisy)]
    np.testing.assert_allclose(got.scores, want, atol=1e-6)
    assert 1.0 <= got.scores[1] < got.scores[0] < 4.65  # more noise, lower PESQ
    same = wideband_pesq(clean[0], clean[0])  # identical pair: the top of the wide-band scale
    assert abs(float(same.scores[0]) - 4.644) < 0.01


def test_unscorable_pairs_are_excluded_with_a_reason(rng):
    clean = _speechlike(rng)
    ref = np.stack([clean, np.zeros_like(clean)])  # the second reference is silent
    got = wideband_pesq(ref, ref + 0.01 * rng.standard_normal(ref.shape))
    assert np.isfinite(got.scores[0]) and np.isnan(got.scores[1])
    assert got.n_excluded == 1 and "NoUtterances" in got.failures[1]
    short = wideband_pesq(clean[:800], clean[:800])  # 50 ms
    assert short.n_excluded == 1 and np.isnan(short.scores[0]) and "Short" in short.failures[0]


def test_pool_gives_the_one_process_numbers_exactly(rng):
    """PESQ in spawned worker processes (the hear study's listening stage) equals the one-process
    path bit for bit: scores, NaNs and the failures with their item indices, over several chunks
    per worker; the arguments are checked in the caller's process with the same errors."""
    clean = np.stack([_speechlike(rng, 1.0) for _ in range(6)]).astype(np.float32)
    clean[3] = 0.0  # a silent reference: excluded with its reason, at its own index
    deg = (clean + rng.standard_normal(clean.shape) * np.array([0.001, 0.01, 0.05, 0.01, 0.1, 0.2])[:, None]).astype(np.float32)
    want = wideband_pesq(clean, deg)
    assert want.n_excluded == 1 and 3 in want.failures
    with pesq_pool(2) as pool:
        assert pool is not None
        pending = wideband_pesq_async(clean, deg, pool)
        got = pending.result()
        again = wideband_pesq(clean, deg, pool=pool)
        with pytest.raises(ValueError, match="degraded"):
            wideband_pesq_async(clean, np.full_like(deg, np.nan), pool)
    assert len(pending._chunks) > 2  # the pairs went out in several chunks
    for g in (got, again):
        np.testing.assert_array_equal(g.scores, want.scores)  # NaN where excluded, equal elsewhere, exactly
        assert g.failures == want.failures
    with pesq_pool(1) as none:  # one worker: score here, no processes
        assert none is None


@pytest.mark.parametrize("ref, deg, fs, match", [
    (np.ones((2, 100)), np.ones((3, 100)), 16000, "same shape"),
    (np.ones(100), np.ones(100), 8000, "fs"),
    (np.ones(100), np.full(100, np.nan), 16000, "degraded"),
])
def test_bad_arguments_name_the_parameter(ref, deg, fs, match):
    with pytest.raises(ValueError, match=match):
        wideband_pesq(ref, deg, fs)


def test_a_broken_pool_still_gives_the_numbers_with_a_warning(rng):
    """A worker that dies breaks the pool: the rows are scored in the caller's process (the same
    numbers), said aloud, never lost or turned into NaN."""
    import os
    from concurrent.futures.process import BrokenProcessPool

    clean = np.stack([_speechlike(rng, 1.0) for _ in range(3)])
    deg = clean + 0.01 * rng.standard_normal(clean.shape)
    want = wideband_pesq(clean, deg)
    with pesq_pool(2) as pool:
        with pytest.raises(BrokenProcessPool):
            pool.submit(os._exit, 1).result()  # a worker dies: the pool is broken
        with pytest.warns(RuntimeWarning, match="worker processes failed"):
            got = wideband_pesq(clean, deg, pool=pool)
    np.testing.assert_array_equal(got.scores, want.scores)
    assert got.failures == want.failures == {}
