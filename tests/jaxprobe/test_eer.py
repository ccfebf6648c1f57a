"""jaxprobe.eer against scikit-learn's ROC curve and the numpy trial-list EER; bootstrap_eer
against explicit resampling of items."""
from __future__ import annotations

import jax
import numpy as np
import pytest
from sklearn.metrics import roc_curve

import jaxprobe
from torch_bridge.models.speaker import eer as numpy_eer


def _sklearn_eer(scores, labels):
    """EER by linear interpolation of sklearn's ROC where FNR - FPR changes sign."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    d = (1.0 - tpr) - fpr
    i = int(np.argmax(d <= 0))
    a = d[i - 1] / (d[i - 1] - d[i]) if d[i - 1] != d[i] else 0.0
    return fpr[i - 1] + a * (fpr[i] - fpr[i - 1])


def test_matches_sklearn_roc_with_ties(rng):
    for _ in range(12):  # every new trial count compiles once
        m = int(rng.integers(4, 80))
        y = rng.integers(0, 2, size=m)
        if y.sum() in (0, m):
            continue
        s = np.round(rng.normal(size=m) + y, int(rng.integers(0, 3)))  # rounding makes ties
        assert abs(float(jaxprobe.eer(s, y)) - _sklearn_eer(s, y)) < 1e-6


def test_integer_weights_equal_repeated_trials(rng):
    for _ in range(12):
        m = int(rng.integers(4, 40))
        y = rng.integers(0, 2, size=m)
        w = rng.integers(0, 4, size=(3, m))
        if y.sum() in (0, m) or ((w * y).sum(1) == 0).any() or ((w * (1 - y)).sum(1) == 0).any():
            continue
        s = np.round(rng.normal(size=m), 1)
        got = np.asarray(jaxprobe.eer(s, y, w))
        want = [numpy_eer(np.repeat(s, wb), np.repeat(y, wb)) for wb in w]
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_empty_class_weighting_is_nan_not_a_number():
    s, y = np.array([0.9, 0.1, 0.5, 0.3]), np.array([1, 0, 1, 0])
    assert np.isnan(float(jaxprobe.eer(s, y, np.array([0, 1, 0, 1]))))


def _trials(rng, n_spk=6, per=5):
    spk = np.repeat(np.arange(n_spk), per)
    i, j = np.triu_indices(spk.size, 1)
    emb = rng.normal(size=(n_spk, 8))[spk] + 0.9 * rng.normal(size=(spk.size, 8))
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return np.einsum("md,md->m", e[i], e[j]), (spk[i] == spk[j]).astype(int), np.stack([i, j], 1), spk


def test_bootstrap_replicates_equal_explicit_item_resampling(rng):
    scores, labels, pairs, spk = _trials(rng)
    key = jax.random.key(4)
    res = jaxprobe.bootstrap_eer(scores, labels, pairs, key=key, n_boot=20)
    assert res.n_boot == 20
    counts = np.asarray(jaxprobe.resample_counts(key, 20, spk.size))
    lookup = {(int(a), int(b)): k for k, (a, b) in enumerate(pairs)}
    for b in range(20):
        idx = np.repeat(np.arange(spk.size), counts[b])  # the resampled items, duplicates included
        s, y = [], []
        for u in range(idx.size):
            for v in range(u + 1, idx.size):
                a, c = sorted((int(idx[u]), int(idx[v])))
                if a != c:  # an item paired with its own copy is not a trial
                    k = lookup[(a, c)]
                    s.append(scores[k]), y.append(labels[k])
        assert abs(float(res.replicates[b]) - numpy_eer(np.array(s), np.array(y))) < 1e-6
    assert abs(float(res.estimate) - numpy_eer(scores, labels)) < 1e-6
    assert float(res.low) <= float(res.estimate) <= float(res.high)


def test_speaker_clusters_widen_the_interval(rng):
    scores, labels, pairs, spk = _trials(rng, n_spk=10, per=6)
    key = jax.random.key(0)
    items = jaxprobe.bootstrap_eer(scores, labels, pairs, key=key, n_boot=400)
    speakers = jaxprobe.bootstrap_eer(scores, labels, pairs, key=key, n_boot=400, groups=spk)
    # trials of one speaker are dependent: resampling speakers sees that, resampling items less so
    assert float(speakers.high - speakers.low) > float(items.high - items.low) > 0
    assert items.estimate == speakers.estimate


def test_errors(rng):
    scores, labels, pairs, _ = _trials(rng)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="both target"):
        jaxprobe.eer(scores, np.zeros_like(labels))
    with pytest.raises(ValueError, match="m > 0 trials"):
        jaxprobe.eer(scores, labels[:-1])
    with pytest.raises(ValueError, match="finite"):
        jaxprobe.eer(np.r_[np.nan, scores[1:]], labels)
    with pytest.raises(ValueError, match="non-negative"):
        jaxprobe.eer(scores, labels, -np.ones_like(scores))
    with pytest.raises(ValueError, match="'pairs'"):
        jaxprobe.bootstrap_eer(scores, labels, pairs[:, :1], key=key)
    with pytest.raises(ValueError, match="two different item"):
        jaxprobe.bootstrap_eer(scores, labels, np.zeros_like(pairs), key=key)
    with pytest.raises(ValueError, match="n_boot"):
        jaxprobe.bootstrap_eer(scores, labels, pairs, key=key, n_boot=0)


def test_systems_scoring_the_same_trials_share_resamples(rng):
    """(k, m) scores: each system's replicates equal its own 1-D bootstrap with the same key,
    so differences of replicates are paired."""
    scores, labels, pairs, _ = _trials(rng)
    other = scores + 0.3 * rng.normal(size=scores.shape)
    key = jax.random.key(7)
    both = jaxprobe.bootstrap_eer(np.stack([scores, other]), labels, pairs, key=key, n_boot=50)
    one = jaxprobe.bootstrap_eer(other, labels, pairs, key=key, n_boot=50)
    assert both.replicates.shape == (50, 2) and both.estimate.shape == (2,)
    np.testing.assert_allclose(np.asarray(both.replicates[:, 1]), np.asarray(one.replicates), atol=1e-7)
    np.testing.assert_allclose(float(both.estimate[1]), numpy_eer(other, labels), atol=1e-6)
