"""jaxprobe.min_dcf against an explicit float64 threshold sweep and scikit-learn's ROC curve;
bootstrap_min_dcf against explicit item resampling and against bootstrap_eer's resamples."""
from __future__ import annotations

import jax
import numpy as np
import pytest
from sklearn.metrics import roc_curve

import jaxprobe
from tests.reference.dcf_ref import min_dcf as ref_min_dcf


def _sklearn_min_dcf(scores, labels, p, c_miss=1.0, c_fa=1.0):
    """minDCF over the operating points of scikit-learn's ROC (an independent threshold list)."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    dcf = c_miss * (1.0 - tpr) * p + c_fa * fpr * (1.0 - p)
    return float(np.min(dcf) / min(c_miss * p, c_fa * (1.0 - p)))


def test_matches_threshold_sweep_and_sklearn_with_ties(rng, x64):
    for _ in range(12):
        m = int(rng.integers(4, 120))
        y = rng.integers(0, 2, size=m)
        if y.sum() in (0, m):
            continue
        s = np.round(rng.normal(size=m) + 1.5 * y, int(rng.integers(0, 3)))  # rounding makes ties
        got = np.asarray(jaxprobe.min_dcf(s, y))
        assert got.shape == (2,)
        for k, p in enumerate((0.01, 0.001)):
            assert abs(got[k] - ref_min_dcf(s, y, p)) < 1e-9
            assert abs(got[k] - _sklearn_min_dcf(s, y, p)) < 1e-9
        cm, cf, p = 3.0, 0.5, 0.2  # other costs and a scalar prior
        assert abs(float(jaxprobe.min_dcf(s, y, p, c_miss=cm, c_fa=cf)) - ref_min_dcf(s, y, p, cm, cf)) < 1e-9


def test_float32_close_to_reference(rng):
    y = rng.integers(0, 2, size=300)
    s = rng.normal(size=300) + y
    got = np.asarray(jaxprobe.min_dcf(s, y, (0.5, 0.05, 0.01)))
    want = [ref_min_dcf(s, y, p) for p in (0.5, 0.05, 0.01)]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_known_values():
    y = np.array([1, 1, 0, 0])
    assert np.allclose(np.asarray(jaxprobe.min_dcf([0.9, 0.8, 0.2, 0.1], y)), 0.0)  # separable
    # reversed scores: the best is a trivial system (reject all), cost 1
    assert np.allclose(np.asarray(jaxprobe.min_dcf([0.1, 0.2, 0.8, 0.9], y)), 1.0)
    # one target below one non-target: p = 0.5 -> miss 1/2 at the best threshold, normalised 0.5
    assert abs(float(jaxprobe.min_dcf([0.9, 0.1, 0.5, 0.0], y, 0.5)) - 0.5) < 1e-6


def test_integer_weights_equal_repeated_trials(rng, x64):
    for _ in range(8):
        m = int(rng.integers(4, 40))
        y = rng.integers(0, 2, size=m)
        w = rng.integers(0, 4, size=(3, m))
        if y.sum() in (0, m) or ((w * y).sum(1) == 0).any() or ((w * (1 - y)).sum(1) == 0).any():
            continue
        s = np.round(rng.normal(size=m) + y, 1)
        got = np.asarray(jaxprobe.min_dcf(s, y, (0.01, 0.3), w))
        want = [[ref_min_dcf(np.repeat(s, wb), np.repeat(y, wb), p) for p in (0.01, 0.3)] for wb in w]
        np.testing.assert_allclose(got, want, atol=1e-9)


def test_empty_class_weighting_is_nan():
    s, y = np.array([0.9, 0.1, 0.5, 0.3]), np.array([1, 0, 1, 0])
    assert np.isnan(np.asarray(jaxprobe.min_dcf(s, y, weights=np.array([0, 1, 0, 1])))).all()


@pytest.mark.parametrize("kw, match", [
    ({"p_target": 0.0}, "p_target"), ({"p_target": [0.5, 1.0]}, "p_target"), ({"c_miss": -1.0}, "c_miss"),
    ({"c_fa": float("nan")}, "c_fa"), ({"weights": np.array([1.0, -1.0, 1.0, 1.0])}, "weights"),
])
def test_bad_arguments_name_the_parameter(kw, match):
    with pytest.raises(ValueError, match=match):
        jaxprobe.min_dcf([0.9, 0.1, 0.5, 0.3], [1, 0, 1, 0], **kw)
    with pytest.raises(ValueError, match="labels"):
        jaxprobe.min_dcf([0.9, 0.1], [1, 1])
    with pytest.raises(ValueError, match="scores"):
        jaxprobe.min_dcf([0.9, np.nan], [1, 0])


def _trials(rng, n_spk=6, per=5):
    spk = np.repeat(np.arange(n_spk), per)
    i, j = np.triu_indices(spk.size, 1)
    emb = rng.normal(size=(n_spk, 8))[spk] + 0.9 * rng.normal(size=(spk.size, 8))
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return np.einsum("md,md->m", e[i], e[j]), (spk[i] == spk[j]).astype(int), np.stack([i, j], 1), spk


def test_bootstrap_replicates_equal_explicit_item_resampling(rng, x64):
    scores, labels, pairs, spk = _trials(rng)
    key = jax.random.key(4)
    res = jaxprobe.bootstrap_min_dcf(scores, labels, pairs, key=key, n_boot=15, p_target=(0.01, 0.1))
    assert res.estimate.shape == (2,) and res.n_boot == 15
    counts = np.asarray(jaxprobe.resample_counts(key, 15, spk.size))
    lookup = {(int(a), int(b)): k for k, (a, b) in enumerate(pairs)}
    for b in range(15):
        idx = np.repeat(np.arange(spk.size), counts[b])
        s, y = [], []
        for u in range(idx.size):
            for v in range(u + 1, idx.size):
                a, c = sorted((int(idx[u]), int(idx[v])))
                if a != c:
                    k = lookup[(a, c)]
                    s.append(scores[k]), y.append(labels[k])
        for q, p in enumerate((0.01, 0.1)):
            assert abs(float(res.replicates[b, q]) - ref_min_dcf(s, y, p)) < 1e-9
    for q, p in enumerate((0.01, 0.1)):
        assert abs(float(res.estimate[q]) - ref_min_dcf(scores, labels, p)) < 1e-9
    assert np.all(np.asarray(res.low) <= np.asarray(res.estimate) + 1e-12)
    assert np.all(np.asarray(res.estimate) <= np.asarray(res.high) + 1e-12)


def test_bootstrap_shares_resamples_with_eer_and_pairs_systems(rng):
    scores, labels, pairs, spk = _trials(rng)
    other = scores + 0.3 * rng.normal(size=scores.size)
    key = jax.random.key(9)
    e = jaxprobe.bootstrap_eer(np.stack([scores, other]), labels, pairs, key=key, n_boot=40, groups=spk)
    d = jaxprobe.bootstrap_min_dcf(np.stack([scores, other]), labels, pairs, key=key, n_boot=40, groups=spk,
                                   p_target=0.05)
    assert d.estimate.shape == (2,) and d.replicates.shape == (e.replicates.shape[0], 2)
    # the same kept resamples: a replicate's minDCF equals min_dcf under that replicate's trial weights
    C = np.asarray(jaxprobe.resample_counts(key, 40, spk.size, groups=spk), np.float64)
    W = C[:, pairs[:, 0]] * C[:, pairs[:, 1]]
    keep = np.isfinite(np.asarray(jaxprobe.eer(scores, labels, W)))
    want = np.asarray(jaxprobe.min_dcf(other, labels, 0.05, W))[keep]
    np.testing.assert_allclose(np.asarray(d.replicates[:, 1]), want, atol=1e-6)


def test_bootstrap_too_few_trials_is_an_error():
    with pytest.raises(ValueError, match="replicates"):
        jaxprobe.bootstrap_min_dcf([0.9, 0.1, 0.5], [1, 0, 0], np.array([[0, 1], [0, 2], [1, 2]]),
                                   key=jax.random.key(0), n_boot=50)
