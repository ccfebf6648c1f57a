import numpy as np
import pytest
from scipy import stats

import jaxprobe


@pytest.mark.usefixtures("x64")
def test_linregress_matches_scipy_batched(rng):
    x = np.arange(-10, 31, dtype=float)
    y = rng.standard_normal((4, 3, 41)) + 0.02 * x
    r = jaxprobe.linregress(x, y)
    assert r.slope.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            s = stats.linregress(x, y[i, j])
            np.testing.assert_allclose(
                [r.slope[i, j], r.intercept[i, j], r.r2[i, j], r.slope_stderr[i, j], r.intercept_stderr[i, j]],
                [s.slope, s.intercept, s.rvalue**2, s.stderr, s.intercept_stderr],
                rtol=1e-10,
            )


@pytest.mark.usefixtures("x64")
def test_spearman_matches_scipy_with_ties(rng):
    x = rng.integers(0, 4, (5, 30)).astype(float)
    y = rng.integers(0, 6, (5, 30)).astype(float)
    got = jaxprobe.spearman(x, y)
    for i in range(5):
        np.testing.assert_allclose(got[i], stats.spearmanr(x[i], y[i]).statistic, rtol=1e-12)
    np.testing.assert_allclose(jaxprobe.rankdata(x[0]), stats.rankdata(x[0]), rtol=0)


def test_errors():
    with pytest.raises(ValueError, match="constant"):
        jaxprobe.linregress(np.ones(5), np.arange(5.0))
    with pytest.raises(ValueError, match="same length"):
        jaxprobe.spearman(np.arange(5.0), np.arange(6.0))
    with pytest.raises(ValueError, match="at least 3"):
        jaxprobe.linregress(np.arange(2.0), np.arange(2.0))
    with pytest.raises(ValueError, match="finite"):
        jaxprobe.spearman(np.array([1.0, np.nan, 2.0]), np.arange(3.0))
