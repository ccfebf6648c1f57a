"""Output quality (PESQ, STOI, SI-SDR) and its rank correlation with per-item CKA."""
import jax
import numpy as np
import pytest
from scipy.stats import spearmanr

from jaxprobe.quality import correlation_records, item_quality, quality_records, si_sdr, weighted_spearman

SR = 16000


def si_sdr_reference(s, e):
    """Plain float64 SI-SDR, one pair, explicit sums."""
    s = [float(v) for v in s]
    e = [float(v) for v in e]
    ms, me = sum(s) / len(s), sum(e) / len(e)
    s = [v - ms for v in s]
    e = [v - me for v in e]
    alpha = sum(a * b for a, b in zip(s, e)) / sum(a * a for a in s)
    t = [alpha * v for v in s]
    r = [b - a for a, b in zip(t, e)]
    return 10 * np.log10(sum(v * v for v in t) / sum(v * v for v in r))


def _speechlike(n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    env = (np.sin(2 * np.pi * 2.5 * t) ** 2) * (t > 0.1)
    return env * (np.sin(2 * np.pi * 180 * t) + 0.5 * np.sin(2 * np.pi * 1250 * t) + 0.2 * rng.standard_normal(n))


def test_si_sdr_known_answer_and_reference():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(2000)
    s -= s.mean()
    e = rng.standard_normal(2000)
    e -= e.mean()
    e -= e @ s / (s @ s) * s  # orthogonal to s
    est = 0.7 * s + e
    assert si_sdr(s, est) == pytest.approx(10 * np.log10(0.49 * (s @ s) / (e @ e)), abs=1e-9)
    assert si_sdr(s, 3.0 * est + 5.0) == pytest.approx(si_sdr(s, est), abs=1e-9)  # scale and offset invariant
    x, y = rng.standard_normal((3, 500)), rng.standard_normal((3, 500))
    batch = si_sdr(x, y)
    for i in range(3):
        assert batch[i] == pytest.approx(si_sdr_reference(x[i], y[i]), abs=1e-9)
        assert si_sdr(x[i], y[i]) == batch[i]
    with pytest.raises(ValueError, match="silent"):
        si_sdr(np.ones(10), x[0, :10])
    with pytest.raises(ValueError, match="shape"):
        si_sdr(x, y[:, :10])


def test_item_quality_against_reference_packages():
    from pesq import pesq
    from pystoi import stoi as pystoi

    ref = np.stack([_speechlike(SR * 2, s) for s in range(3)])
    rng = np.random.default_rng(5)
    deg = ref + 0.3 * rng.standard_normal(ref.shape) * ref.std()
    deg[1] = np.zeros_like(deg[1])  # a silent estimate: PESQ and SI-SDR cannot score it
    q = item_quality(ref, deg)
    for i in (0, 2):
        assert q["pesq"][i] == pytest.approx(pesq(SR, ref[i], deg[i], "wb"), abs=1e-6)
        assert q["stoi"][i] == pytest.approx(pystoi(ref[i], deg[i], SR), abs=1e-3)
        assert q["si_sdr"][i] == pytest.approx(si_sdr_reference(ref[i], deg[i]), abs=1e-6)
    assert np.isnan(q["pesq"][1]) and np.isnan(q["si_sdr"][1]) and np.isfinite(q["stoi"][1])
    assert set(q["excluded"]["pesq"]) == {1} and set(q["excluded"]["si_sdr"]) == {1}


def test_item_quality_excludes_unscorable_items():
    long, short = _speechlike(SR, 0), _speechlike(SR, 1)
    short[3000:] = 0.0  # 0.19 s of signal, then silence: too short for PESQ and STOI
    ref = np.stack([long, short])
    deg = ref * 0.5 + 0.01 * np.random.default_rng(0).standard_normal(ref.shape)
    q = item_quality(ref, deg)
    assert np.isfinite(q["pesq"][0]) and np.isfinite(q["stoi"][0])
    assert np.isnan(q["pesq"][1]) and set(q["excluded"]["pesq"]) == {1}
    assert np.isnan(q["stoi"][1]) and "spectral frames" in q["excluded"]["stoi"][1]
    assert np.isfinite(q["si_sdr"]).all() and q["excluded"]["si_sdr"] == {}


def test_weighted_spearman_equals_scipy_on_expanded_samples():
    rng = np.random.default_rng(1)
    n = 12
    x = rng.standard_normal((2, n))
    y = np.round(rng.standard_normal(n), 1)  # ties
    x[1, :4] = x[1, 0]  # ties in x too
    C = rng.multinomial(n, np.ones(n) / n, size=20)
    got = weighted_spearman(x, y, C)
    for b in range(20):
        idx = np.repeat(np.arange(n), C[b])
        for i in range(2):
            ref = spearmanr(x[i, idx], y[idx]).statistic
            if np.isfinite(ref):
                assert got[b, i] == pytest.approx(ref, abs=1e-12)
            else:
                assert np.isnan(got[b, i])
    plain = weighted_spearman(x, y, np.ones((1, n)))[0]
    assert plain[0] == pytest.approx(spearmanr(x[0], y).statistic, abs=1e-12)
    C0 = np.zeros((1, n))
    C0[0, 3] = n  # one item drawn n times: constant resample, no rho
    assert np.isnan(weighted_spearman(x, y, C0)).all()


def test_quality_records_means_and_exclusions():
    rng = np.random.default_rng(2)
    K, S, U = 3, 2, 5
    v = rng.uniform(1, 4, (K, S, U))
    v[0, 1, 2] = np.nan
    recs, reps = quality_records({("pesq", "noisy"): v}, model="m", axis="c50", levels=[5.0, 20.0],
                                 noises=["a", "b", "c"], key=jax.random.key(0), n_boot=200)
    pooled = {r["level"]: r for r in recs if r["noise"] == "all"}
    assert pooled[5.0]["estimate"] == pytest.approx(v[:, 0].mean())
    assert pooled[20.0]["estimate"] == pytest.approx(np.nanmean(v[:, 1]))
    assert pooled[20.0]["n_excluded"] == 1 and pooled[5.0]["n_excluded"] == 0
    for r in recs:
        assert r["low"] <= r["estimate"] <= r["high"]
        assert {"model", "axis", "level", "noise", "metric", "input", "estimate", "low", "high"} <= set(r)
    one = [r for r in recs if r["noise"] == "a" and r["level"] == 20.0][0]
    assert one["estimate"] == pytest.approx(np.nanmean(v[0, 1])) and one["n"] == U - 1
    assert reps[("pesq", "noisy", 0)].shape == (200,)


def test_correlation_records_find_the_predictive_layer():
    rng = np.random.default_rng(3)
    K, S, U = 4, 3, 6
    cka = rng.uniform(0.3, 1.0, (2, K, S, U))
    q = 2.0 * cka[0] + 0.01 * rng.standard_normal((K, S, U))  # layer 0 predicts quality, layer 1 does not
    q[1, 2, 3] = np.nan
    layers = [{"name": "l0", "block": "A"}, {"name": "l1", "block": "B"}]
    recs = correlation_records(cka, {("pesq", "enhanced"): q}, layers=layers, levels=[0.0, 10.0, 20.0],
                               key=jax.random.key(1), n_boot=300)
    by = {(r["layer"], r["level"]): r for r in recs}
    assert len(recs) == 2 * 4
    ok = np.isfinite(q)
    assert by[("l0", "all")]["rho"] == pytest.approx(spearmanr(cka[0][ok], q[ok]).statistic, abs=1e-12)
    assert by[("l0", "all")]["rho"] > 0.95 and by[("l0", "all")]["low"] > 0.9
    assert by[("l1", "all")]["low"] < 0 < by[("l1", "all")]["high"]
    assert by[("l0", "all")]["n_excluded"] == 1 and by[("l0", 20.0)]["n_excluded"] == 1
    assert by[("l0", 0.0)]["n"] == K * U
    lv = q[:, 1][np.isfinite(q[:, 1])]
    assert by[("l0", 10.0)]["rho"] == pytest.approx(spearmanr(cka[0][:, 1].reshape(-1), q[:, 1].reshape(-1)).statistic)
    assert lv.size == K * U
