"""jaxprobe.audio.pesq.wideband_pesq against the pesq package called directly on known pairs, and
its handling of pairs PESQ cannot score (excluded with a reason, never a number)."""
from __future__ import annotations

import numpy as np
import pytest
from pesq import pesq

from jaxprobe.audio.pesq import wideband_pesq


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


@pytest.mark.parametrize("ref, deg, fs, match", [
    (np.ones((2, 100)), np.ones((3, 100)), 16000, "same shape"),
    (np.ones(100), np.ones(100), 8000, "fs"),
    (np.ones(100), np.full(100, np.nan), 16000, "degraded"),
])
def test_bad_arguments_name_the_parameter(ref, deg, fs, match):
    with pytest.raises(ValueError, match=match):
        wideband_pesq(ref, deg, fs)
