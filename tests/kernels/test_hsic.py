import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe_kernels import gram, hsic
from tests.reference import cka_ref as ref


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("n", [4, 9, 30])
def test_hsic_estimators_match_reference(rng, n):
    K = ref.linear_gram(rng.standard_normal((n, 5)))
    L = ref.rbf_gram(rng.standard_normal((n, 3)), 0.9)
    np.testing.assert_allclose(hsic.hsic_biased(K, L), ref.hsic_biased(K, L), rtol=1e-10)
    np.testing.assert_allclose(hsic.hsic_unbiased(K, L), ref.hsic_unbiased(K, L), rtol=1e-10, atol=1e-14)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("debiased", [False, True])
def test_cka_from_grams_and_feature_space_match_reference(rng, debiased):
    X = rng.standard_normal((40, 6))
    Y = X @ rng.standard_normal((6, 9)) + rng.standard_normal((40, 9))
    K, L = ref.linear_gram(X), ref.linear_gram(Y)
    expect = ref.cka(K, L, debiased)
    np.testing.assert_allclose(hsic.cka_from_grams(K, L, debiased=debiased), expect, rtol=1e-10)
    np.testing.assert_allclose(hsic.cka_linear_features(X, Y, debiased=debiased), expect, rtol=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_float32_tolerance(rng, debiased):
    X = rng.standard_normal((40, 6))
    Y = X + 0.5 * rng.standard_normal((40, 6))
    expect = ref.cka(ref.linear_gram(X), ref.linear_gram(Y), debiased)
    got = hsic.cka_linear_features(X.astype(np.float32), Y.astype(np.float32), debiased=debiased)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, expect, rtol=1e-5)  # float32: stated tolerance 1e-5 relative
