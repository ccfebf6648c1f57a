"""Diffusion maps (Coifman & Lafon 2006; Nadler et al. 2006), batched over clouds.

Conventions (shared with ``kernels.affinity`` and ``tests/reference/diffusion_ref.py``)
-------------------------------------------------------------------------------------
* Kernel ``k(x, y) = exp(-||x - y||^2 / (2 epsilon))``, self-affinity included.
  (pydiffmap divides by ``4 eps``: its ``eps`` is ``epsilon / 2`` here.)
* Density normalisation with ``alpha``: ``q = K 1``, ``K_a = Q^-a K Q^-a``. ``alpha = 0``
  is the classical normalised graph Laplacian, ``1/2`` the Fokker-Planck operator,
  ``1`` the Laplace-Beltrami operator (density removed).
* Markov matrix ``P = D^-1 K_a`` with ``D = diag(K_a 1)``; stationary distribution
  ``pi = D 1 / (1^T D 1)``. The spectrum comes from the symmetric conjugate
  ``S = D^-1/2 K_a D^-1/2`` with ``eigh`` (real, no complex pairs); right eigenvectors
  of ``P`` are ``psi = v / sqrt(pi)``, normalised so ``sum_i pi_i psi(i)^2 = 1``.
* The trivial pair (eigenvalue 1, constant ``psi``) is deflated exactly before the solve
  (``S - 2 v0 v0^T`` with ``v0 = sqrt(pi)``), so it is dropped even when the graph is
  nearly disconnected. Eigenvalues are returned in decreasing order.
* Coordinates ``coords = lambda^t psi`` (``lambda`` clipped at 0; the Gaussian kernel is
  positive semi-definite, so negative values are round-off). With all ``n - 1``
  components, Euclidean distance between coordinates is the diffusion distance
  ``||p_t(x_i, .) - p_t(x_j, .)||_{1/pi}``.
* ``coordinates="symmetric"`` (the SE authors' convention) uses the unit eigenvectors
  ``v = sqrt(pi) psi`` of ``S`` directly: ``coords = lambda^t v``, same eigenvalues, same
  signs, trivial pair dropped as well. With uneven degrees the per-point factor
  ``sqrt(pi_i)`` reorders points along each coordinate, and Euclidean distances between
  these coordinates are not diffusion distances.
* Signs: each eigenvector's entry of largest magnitude is positive. ``align_to=a``
  (a vector over the points, e.g. SNR) instead makes ``sum_i pi_i psi(i) a_i >= 0``, so
  DC1 points the same way across layers, runs and bootstrap replicates.
* ``energy``: the kept components are the fewest whose cumulative share of
  ``sum(lambda)`` over the computed nontrivial eigenvalues reaches ``energy``. Shapes stay
  fixed inside the batched call: ``n_kept`` (per cloud) and ``mask`` say what is kept,
  and ``coords`` is zero in the dropped columns (so distances use only kept ones).
"""
from __future__ import annotations

import dataclasses
import numbers
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.sparse.linalg import lobpcg_standard

from jaxprobe._validate import as_float_array, check_choice, check_finite, check_int, check_key, check_positive
from jaxprobe_kernels.affinity import (
    affinity_matvec,
    cross_affinity,
    default_gram_blocks,
    epsilon_bgh,
    epsilon_median,
    gaussian_affinity,
    symmetric_sq_distances,
)
from jaxprobe_kernels.gram import sq_distances
from jaxprobe_kernels.krylov import block_krylov_eigh, converged

EPSILON_RULES = ("median", "bgh")
COORDINATES = ("markov", "symmetric")
SOLVERS = ("auto", "eigh", "lobpcg", "krylov")
DENSE_MAX_N = 8192  # above this n, affinities are built in tiles (block_size=None)
AUTO_EIGH_MAX_N = 256  # solver="auto" uses eigh up to this n
KRYLOV_STEPS = 4  # block Krylov: basis [Q, SQ, ..., S^4 Q] of blocks k + KRYLOV_EXTRA wide
KRYLOV_EXTRA = 2
BLOCK_SIZE = 1024
EPSILON_SUBSAMPLE = 2048  # the tiled path estimates epsilon rules on this many points
ALMOST_ONE = 0.99  # smallest off-diagonal affinity above this: kernel ~ all ones
ALMOST_ZERO = 1e-6  # largest off-diagonal affinity of a point below this: isolated point


@partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "coords", "eigenvalues", "eigenvectors", "epsilon", "stationary", "density",
        "n_kept", "mask", "min_affinity", "n_isolated", "residuals",
    ],
    meta_fields=["alpha", "t", "epsilon_rule", "energy", "solver", "coordinates"],
)
@dataclasses.dataclass(frozen=True)
class DiffusionMap:
    """A diffusion map of one cloud or of a batch of clouds (leading axes ``...``).

    Attributes
    ----------
    coords : array of shape (..., n, k), ``lambda^t psi`` ("markov") or ``lambda^t v``
        ("symmetric"), zero where ``mask`` is False.
    eigenvalues : array of shape (..., k), nontrivial, decreasing.
    eigenvectors : array of shape (..., n, k), right eigenvectors ``psi`` of P ("markov"), or
        the unit eigenvectors ``v = sqrt(pi) psi`` of the conjugate matrix S ("symmetric").
    epsilon : array of shape (...), the bandwidth used.
    stationary : array of shape (..., n), ``pi``.
    density : array of shape (..., n), kernel row sums ``q`` (needed for Nystrom).
    n_kept : int array of shape (...), components kept (``k`` unless ``energy``).
    mask : bool array of shape (..., k)
    min_affinity : array of shape (...), smallest off-diagonal affinity.
    n_isolated : int array of shape (...), points with no off-diagonal affinity above 1e-6.
    residuals : array of shape (..., k), ``||S v - lambda v||`` of each unit eigenvector
        of the conjugate matrix (a convergence check for LOBPCG).
    alpha, t, epsilon_rule, energy, solver, coordinates : the settings (static).
    """

    coords: jax.Array
    eigenvalues: jax.Array
    eigenvectors: jax.Array
    epsilon: jax.Array
    stationary: jax.Array
    density: jax.Array
    n_kept: jax.Array
    mask: jax.Array
    min_affinity: jax.Array
    n_isolated: jax.Array
    residuals: jax.Array
    alpha: float
    t: float
    epsilon_rule: str
    energy: float | None
    solver: str
    coordinates: str = "markov"


# ----------------------------------------------------------------------------- one cloud


def _epsilon(D2, eps_value, rule):
    if rule == "median":
        return epsilon_median(D2)
    if rule == "bgh":
        return epsilon_bgh(D2)[0]
    return eps_value.astype(D2.dtype)


def _affinity_health_d2(D2, eps):
    """Smallest off-diagonal affinity and count of isolated points (no off-diagonal
    affinity above ``ALMOST_ZERO``) of ``exp(-D2 / (2 eps))``, read off the distances: exp is
    decreasing, so the smallest affinity is that of the largest distance and a row's
    largest off-diagonal affinity that of its smallest off-diagonal distance (the
    same exp of the same value: equal bit for bit). Two reductions over D2 that XLA
    fuses with the pass building K, instead of two more passes over K."""
    off = ~jnp.eye(D2.shape[0], dtype=bool)
    min_aff = gaussian_affinity(jnp.max(D2), eps)  # D2 >= 0 with a zero diagonal: the largest is off it
    row_max = gaussian_affinity(jnp.min(jnp.where(off, D2, jnp.inf), axis=1), eps)
    return min_aff, jnp.sum(row_max < ALMOST_ZERO)


def _dense_operator(X, eps_value, alpha, *, rule):
    """The deflated conjugate operator ``S - 2 v0 v0^T`` of one cloud (n, d), kept as
    the (n, n) affinity matrix ``K`` and one scaling vector ``c``.

    ``S = D^-1/2 Q^-a K Q^-a D^-1/2 = diag(c) K diag(c)`` with ``c = q^-a / sqrt(deg)`` and
    ``deg = q^-a * (K q^-a)``, so ``S V = c * (K (c * V))``: K is the only (n, n) array
    (S, Ka and a transpose would be three more passes over an (n, n) matrix), and
    ``S`` is exactly symmetric because ``K`` is. Returns ``(apply, dense, eps, deg, q,
    min_aff, n_iso)``, ``dense()`` building the matrix for ``eigh``.
    """
    if default_gram_blocks(*X.shape) > 1:
        D2 = symmetric_sq_distances(X)  # the Gram from its lower block triangle: fewer flops
    else:
        D2 = sq_distances(X)
    eps = _epsilon(D2, eps_value, rule)
    K = gaussian_affinity(D2, eps)
    min_aff, n_iso = _affinity_health_d2(D2, eps)
    q = jnp.sum(K, axis=1)
    qa = q ** (-alpha)
    deg = qa * (K @ qa)
    c = qa * jax.lax.rsqrt(deg)
    v0 = jnp.sqrt(deg / jnp.sum(deg))

    def apply(V):
        return c[:, None] * (K @ (c[:, None] * V)) - 2.0 * v0[:, None] * (v0 @ V)[None, :]

    def dense():
        return K * (c[:, None] * c[None, :]) - 2.0 * jnp.outer(v0, v0)

    return apply, dense, eps, deg, q, min_aff, n_iso


def _blocked_operator(X, eps_value, alpha, key, *, rule, block_size):
    """The same operator as a function, affinities rebuilt in tiles at every product.

    Epsilon rules and the degeneracy check use a random subsample of at most
    ``EPSILON_SUBSAMPLE`` points (all points when n is smaller).
    """
    n = X.shape[0]
    m = min(n, EPSILON_SUBSAMPLE)
    idx = jax.random.choice(key, n, (m,), replace=False) if m < n else jnp.arange(n)
    D2s = sq_distances(X[idx])
    eps = _epsilon(D2s, eps_value, rule)
    min_aff, n_iso = _affinity_health_d2(D2s, eps)

    def kmv(V):
        return affinity_matvec(X, V, eps, block_size=block_size)

    q = kmv(jnp.ones((n, 1), X.dtype))[:, 0]
    qa = q ** (-alpha)
    deg = qa * kmv(qa[:, None])[:, 0]
    scale = qa * jax.lax.rsqrt(deg)
    v0 = jnp.sqrt(deg / jnp.sum(deg))

    def op(V):
        return scale[:, None] * kmv(scale[:, None] * V) - 2.0 * v0[:, None] * (v0 @ V)[None, :]

    return op, eps, deg, q, min_aff, n_iso


def _finish(w, V, deg, t, energy, align, *, k, use_energy, use_align, symmetric=False):
    """Truncate to k, map to right eigenvectors, fix signs, weight by lambda^t.

    ``w`` (decreasing) holds every computed nontrivial eigenvalue; the energy share
    is taken over all of them.
    """
    lam_all = jnp.maximum(w, 0.0)
    if use_energy:
        total = jnp.sum(lam_all)
        frac = jnp.cumsum(lam_all) / jnp.where(total > 0, total, 1.0)
        n_kept = jnp.minimum(jnp.sum(frac < energy * (1 - 1e-6)) + 1, k)
    else:
        n_kept = jnp.asarray(k)
    w, V, lam = w[:k], V[:, :k], lam_all[:k]
    pi = deg / jnp.sum(deg)
    psi = V / jnp.sqrt(pi)[:, None]
    top = jnp.argmax(jnp.abs(psi), axis=0)
    sign = jnp.sign(psi[top, jnp.arange(k)])
    if use_align:
        c = jnp.sum(pi[:, None] * psi * align[:, None], axis=0)
        sign = jnp.where(c != 0, jnp.sign(c), sign)
    psi = psi * jnp.where(sign == 0, 1.0, sign)[None, :]
    if symmetric:  # the unit eigenvectors of S, signed like psi
        psi = psi * jnp.sqrt(pi)[:, None]
    mask = jnp.arange(k) < n_kept
    coords = psi * (lam ** t * mask)[None, :]
    return coords, w, psi, pi, n_kept, mask


def _one_cloud(X, eps_value, alpha, t, energy, align, key, *, rule, k, solver, block_size,
               maxiter, tol, use_energy, use_align, symmetric=False):
    n = X.shape[0]
    ksub, kinit = jax.random.split(key)
    if block_size is None:
        apply, dense, eps, deg, q, min_aff, n_iso = _dense_operator(X, eps_value, alpha, rule=rule)
    else:
        apply, eps, deg, q, min_aff, n_iso = _blocked_operator(
            X, eps_value, alpha, ksub, rule=rule, block_size=block_size
        )
    if solver == "eigh":
        w, V = jnp.linalg.eigh(dense())
        # ascending; the deflated trivial pair sits at -1, first: drop it and reverse
        w, V = w[::-1][: n - 1], V[:, ::-1][:, : n - 1]
    else:
        def run_lobpcg(X0):
            w, V, _ = lobpcg_standard(apply, X0, m=maxiter, tol=tol)
            order = jnp.argsort(-w)
            return w[order], V[:, order]

        if solver == "krylov":
            # LOBPCG's own test decides; a pair that fails it sends the Ritz vectors to
            # LOBPCG as its start (under lax.map only the branch taken runs)
            v0 = jnp.sqrt(deg / jnp.sum(deg))[:, None]
            X0 = jax.random.normal(kinit, (n, k + KRYLOV_EXTRA), X.dtype)
            w, V, SV = block_krylov_eigh(apply, X0, v0, k=k, steps=KRYLOV_STEPS)
            ok = converged(w, V, SV, jnp.finfo(X.dtype).eps if tol is None else tol)
            w, V = jax.lax.cond(ok, lambda V: (w, V), run_lobpcg, V)
        else:
            w, V = run_lobpcg(jax.random.normal(kinit, (n, k), X.dtype))
    Vk = V[:, :k]
    residual = jnp.linalg.norm(apply(Vk) - Vk * w[None, :k], axis=0)
    coords, w, psi, pi, n_kept, mask = _finish(
        w, V, deg, t, energy, align, k=k, use_energy=use_energy, use_align=use_align, symmetric=symmetric
    )
    # input checks, done here instead of in extra host passes over X: raised by the caller
    finite = jnp.all(jnp.isfinite(X))
    spread = jnp.any(jnp.max(X, axis=0) > jnp.min(X, axis=0))
    return coords, w, psi, eps, pi, q, n_kept, mask, min_aff, n_iso, residual, finite, spread


@partial(
    jax.jit,
    static_argnames=("rule", "k", "solver", "block_size", "maxiter", "tol", "use_energy", "use_align",
                     "sequential", "symmetric"),
)
def diffusion_map_batched(X, eps_value, alpha, t, energy, align, key, *, sequential, **static):
    """X (B, n, d), align (B, n), key: one PRNG key -> tuple of (B, ...) arrays.

    ``sequential``: clouds one after another (``lax.map``), each cloud's (n, n)
    working set staying in cache, GEMMs unbatched (on CPU about 1.5x faster than
    ``vmap`` at 24 x 738 x 2048, where XLA's batched dot and the batched bisection
    passes are memory-bound). False: ``vmap``, so XLA can split a sharded batch axis
    over devices (``jaxprobe.distributed.sharded_diffusion_map``). The dense top-k
    paths run sequentially: many small clouds (``eigh``, n <= 256 with "auto")
    are faster batched, LAPACK's eigh under ``lax.map`` measured slower than batched
    (0.25 vs 0.14 s per 738-point cloud, with outliers far above), and the tiled
    LOBPCG path's working set is bounded anyway. "krylov" always runs sequentially
    on one device: its LOBPCG fallback is a ``lax.cond``, which ``vmap`` would turn
    into running both branches.
    """
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(X.shape[0]))
    fn = partial(_one_cloud, **static)
    if sequential:
        return jax.lax.map(lambda a: fn(a[0], eps_value, alpha, t, energy, a[1], a[2]), (X, align, keys))
    return jax.vmap(fn, in_axes=(0, None, None, None, None, 0, 0))(
        X, eps_value, alpha, t, energy, align, keys
    )


# ----------------------------------------------------------------------------- validation

_FN = "diffusion_map"


def _check_real(v, name, lo, hi, *, lo_open=False, fn=_FN):
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)
    ok = ok and (lo < v if lo_open else lo <= v) and (hi is None or v <= hi)
    if not ok:
        left = "(" if lo_open else "["
        right = "inf)" if hi is None else f"{hi}]"
        raise ValueError(f"The '{name}' parameter of {fn} must be a number in {left}{lo}, {right}. Got {v!r} instead.")
    return float(v)


def _check_shape(X, name, fn):
    # transient: X is only read inside the call, which blocks before returning
    X = as_float_array(X, name, fn=fn, min_ndim=2, transient=True)
    n = X.shape[-2]
    if n < 3:
        raise ValueError(
            f"The '{name}' parameter of {fn} must hold at least 3 points on axis -2 (shape (..., n, d)); "
            f"got shape {tuple(X.shape)}. A diffusion map of fewer than 3 points has no structure."
        )
    return X


def _identical_error(name, fn, idx):
    return ValueError(
        f"The '{name}' parameter of {fn} holds a cloud whose points are all identical "
        f"(batch index {idx}); its affinities carry no geometry. Drop that cloud or check how it was built."
    )


def check_clouds(X, name, fn):
    host = X if isinstance(X, np.ndarray) and X.dtype.kind == "f" else None
    X = as_float_array(X, name, fn=fn, min_ndim=2, integers=False)
    n = X.shape[-2]
    if n < 3:
        raise ValueError(
            f"The '{name}' parameter of {fn} must hold at least 3 points on axis -2 (shape (..., n, d)); "
            f"got shape {tuple(X.shape)}. A diffusion map of fewer than 3 points has no structure."
        )
    Xn = np.asarray(X) if host is None else host  # a device-to-host copy costs more than the checks
    with np.errstate(over="ignore", invalid="ignore"):
        total = Xn.sum()  # one pass, no temporary; inf/nan here only if some value is (or it overflowed)
    if not np.isfinite(total):
        check_finite(Xn, name, fn=fn)  # the exact check, worded with the first bad index
    same = np.max(np.ptp(Xn, axis=-2), axis=-1) == 0
    if same.any():
        idx = tuple(int(i) for i in np.argwhere(np.atleast_1d(same))[0]) if same.ndim else ()
        raise _identical_error(name, fn, idx)
    return X


def _check_epsilon(epsilon, fn=_FN):
    if isinstance(epsilon, str):
        return check_choice(epsilon, "epsilon", EPSILON_RULES, fn=fn), 1.0
    if isinstance(epsilon, numbers.Real) and not isinstance(epsilon, bool):
        return None, check_positive(epsilon, "epsilon", fn=fn)
    raise ValueError(
        f"The 'epsilon' parameter of {fn} must be a number > 0 or one of {EPSILON_RULES}. Got {epsilon!r} instead."
    )


def _warn_unconverged(res: DiffusionMap):
    resid = np.asarray(res.residuals)
    limit = float(np.sqrt(np.finfo(resid.dtype).eps))
    who = {"lobpcg": "LOBPCG has", "krylov": "the Krylov solver and its LOBPCG refinement have"}.get(res.solver)
    if who and (resid > limit).any():
        warnings.warn(
            f"diffusion_map: {who} not converged for {int((resid > limit).sum())} eigenpair(s) "
            f"(largest residual {float(resid.max()):.2e} > {limit:.1e}). Raise maxiter, use fewer components, "
            "or solver='eigh'.",
            stacklevel=3,
        )


def _warn_degenerate(res: DiffusionMap):
    min_aff = np.atleast_1d(np.asarray(res.min_affinity))
    iso = np.atleast_1d(np.asarray(res.n_isolated))
    n = res.coords.shape[-2]
    if (min_aff > ALMOST_ONE).any():
        i = int(np.argmax(min_aff > ALMOST_ONE))
        warnings.warn(
            f"diffusion_map: the kernel is degenerate (all off-diagonal affinities > {ALMOST_ONE}) in "
            f"{int((min_aff > ALMOST_ONE).sum())} cloud(s), first at flat batch index {i}: epsilon is far "
            "larger than the squared distances, so the eigenvectors are noise. Use epsilon='median' or 'bgh', "
            "or a smaller epsilon.",
            stacklevel=3,
        )
    if (iso > 0).any():
        i = int(np.argmax(iso > 0))
        what = "all points are" if iso[i] == n else f"{int(iso[i])} of {n} points are"
        warnings.warn(
            f"diffusion_map: the kernel is degenerate in {int((iso > 0).sum())} cloud(s): at flat batch index {i} "
            f"{what} isolated (no off-diagonal affinity above {ALMOST_ZERO}), so eigenvalues near 1 reflect "
            "disconnection, not geometry. Use epsilon='median' or 'bgh', or a larger epsilon.",
            stacklevel=3,
        )


# ----------------------------------------------------------------------------- public API


def _krylov_basis(k):
    """Columns of the block Krylov basis for k components."""
    return (KRYLOV_STEPS + 1) * (k + KRYLOV_EXTRA)


def _on_one_device(X):
    sharding = getattr(X, "sharding", None)
    return sharding is None or len(sharding.device_set) <= 1


def diffusion_map(
    X,
    *,
    n_components=None,
    epsilon="median",
    alpha=0.0,
    t=1.0,
    energy=None,
    key=None,
    align_to=None,
    solver="auto",
    block_size=None,
    maxiter=100,
    tol=None,
    coordinates="markov",
) -> DiffusionMap:
    """Diffusion map of one cloud or of every cloud of a batch, in one jitted call.

    Kernel ``exp(-||x_i - x_j||^2 / (2 epsilon))``; see the module docstring for the
    normalisation, eigenvector scaling, sign and energy conventions.

    Parameters
    ----------
    X : array of shape (..., n, d), n >= 3; leading axes are a batch of clouds.
    n_components : int in [1, n - 1] or None
        Nontrivial components to return (k). None: all n - 1 (needs solver "eigh").
    epsilon : float > 0, "median" or "bgh"
        Bandwidth or rule (median squared distance over distinct pairs; the
        Berry-Giannakis-Harlim sweep). Rules are applied per cloud.
    alpha : float in [0, 1], density normalisation (0, 1/2, 1; see module docstring).
    t : float >= 0, diffusion time; ``coords = lambda^t psi``.
    energy : float in (0, 1] or None
        Keep the fewest components whose cumulative share of the computed nontrivial
        eigenvalues reaches it (all n - 1 with "eigh", the k computed otherwise);
        ``n_kept``/``mask`` per cloud, dropped columns of ``coords`` are zero.
    key : PRNG key or None
        Start block of the top-k solvers and the epsilon subsample of the tiled path; one key per
        cloud is derived with ``fold_in``. None uses ``jax.random.key(0)``.
    align_to : array of shape (n,) or (..., n), optional
        Sign reference: each component is flipped so ``sum_i pi_i psi(i) a_i >= 0``.
    solver : "auto", "eigh", "lobpcg" or "krylov"
        "eigh": full eigendecomposition of the (n, n) conjugate matrix (exact; needed
        for all components). "lobpcg": the top k by LOBPCG on the deflated conjugate
        operator, needs ``5 k < n``; check ``residuals``. "krylov": the top k from a
        block Krylov basis of ``5 (k + 2)`` vectors (``kernels.krylov``, needs
        ``5 (k + 2) < n`` as well): fewer operator products and no per-iteration
        factorizations, so faster than LOBPCG on dense and tiled clouds alike
        (bench/bench_diffusion.py); pairs that fail LOBPCG's convergence test are
        refined by LOBPCG from the Ritz vectors, so the accuracy is at least LOBPCG's.
        "auto": "eigh" when n <= 256, k is None or 5 k >= n; else "krylov" for float32 on
        one device when its basis fits, else "lobpcg".
    block_size : int or None
        Build affinities in ``block_size`` tiles at every operator product instead of
        storing the (n, n) matrix: memory ``O(n (d + k) + block_size^2)``, top-k solvers only;
        epsilon rules and the degeneracy check then use a random subsample of 2048
        points. None: tiles of 1024 when n > 8192, dense otherwise.
    maxiter, tol : LOBPCG iterations and tolerance
        (``jax.experimental.sparse.linalg.lobpcg_standard``).
    coordinates : "markov" or "symmetric"
        "markov" (default, Coifman-Lafon): right eigenvectors ``psi`` of P, so distances
        between coordinates are diffusion distances. "symmetric" (the SE authors' code):
        the unit eigenvectors ``v = sqrt(pi) psi`` of ``S = D^-1/2 K D^-1/2`` used directly,
        same eigenvalues and signs; ``diffusion_nystrom`` needs "markov".

    Returns
    -------
    DiffusionMap with ``coords`` (..., n, k), ``eigenvalues`` (..., k),
    ``eigenvectors`` (..., n, k), ``epsilon`` (...), ``n_kept`` (...), ``mask`` (..., k).

    Raises
    ------
    ValueError for fewer than 3 points, a cloud of identical points, non-finite
    values, ``n_components >= n``, ``epsilon <= 0`` or a rule giving 0 (most pairs
    duplicated). Warns (UserWarning) when the kernel degenerates or LOBPCG has not
    converged.
    """
    # finiteness and identical points are checked inside the jitted call (same errors)
    X = _check_shape(X, "X", _FN)
    n = X.shape[-2]
    batch = X.shape[:-2]
    rule, eps_value = _check_epsilon(epsilon)
    alpha = _check_real(alpha, "alpha", 0.0, 1.0)
    t = _check_real(t, "t", 0.0, None)
    if energy is not None:
        energy = _check_real(energy, "energy", 0.0, 1.0, lo_open=True)
    solver = check_choice(solver, "solver", SOLVERS, fn=_FN)
    coordinates = check_choice(coordinates, "coordinates", COORDINATES, fn=_FN)
    if n_components is not None and (
        isinstance(n_components, bool) or not isinstance(n_components, numbers.Integral)
        or not 1 <= n_components <= n - 1
    ):
        raise ValueError(
            f"The 'n_components' parameter of {_FN} must be an int in [1, n - 1] = [1, {n - 1}] for clouds "
            f"of n = {n} points (the trivial component is dropped). Got {n_components!r} instead."
        )
    if block_size is None:
        block_size = BLOCK_SIZE if n > DENSE_MAX_N else None
    else:
        block_size = check_int(block_size, "block_size", fn=_FN, low=1)
    one_device = _on_one_device(X)
    if solver == "auto":
        small = n <= AUTO_EIGH_MAX_N or n_components is None or 5 * n_components >= n
        if small and block_size is None:
            solver = "eigh"
        else:
            # float64: the 5-block basis did not meet LOBPCG's float64 test on the benchmark
            # clouds, so LOBPCG would run after it anyway: LOBPCG directly
            krylov = one_device and X.dtype != jnp.float64 and _krylov_basis(n_components) < n
            solver = "krylov" if krylov else "lobpcg"
    if solver == "eigh":
        if block_size is not None:
            raise ValueError(
                f"The 'solver' parameter of {_FN} cannot be 'eigh' with tiled affinities (n = {n}, block_size = "
                f"{block_size}): eigh needs the dense (n, n) matrix. Use solver='lobpcg' with n_components, "
                "or block_size=None for n <= 8192."
            )
        k = n - 1 if n_components is None else int(n_components)
    else:
        if n_components is None:
            raise ValueError(
                f"The 'n_components' parameter of {_FN} must be an int for solver='{solver}' (n = {n}); got None. "
                "Pass e.g. n_components=10, or solver='eigh' for all components."
            )
        k = int(n_components)
        if not 5 * k < n:
            raise ValueError(
                f"The 'n_components' parameter of {_FN} must satisfy 5 * n_components < n for solver='{solver}'; "
                f"got n_components={k}, n={n}. Use solver='eigh' or fewer components."
            )
        if solver == "krylov" and not _krylov_basis(k) < n:
            raise ValueError(
                f"The 'n_components' parameter of {_FN} must satisfy 5 * (n_components + 2) < n for "
                f"solver='krylov' (its basis); got n_components={k}, n={n}. Use solver='lobpcg' or 'eigh'."
            )
        maxiter = check_int(maxiter, "maxiter", fn=_FN, low=1)
        if tol is not None:
            tol = check_positive(tol, "tol", fn=_FN)
    if solver == "eigh":
        maxiter, tol = 0, None  # unused; keeps the compiled signature stable
    key = jax.random.key(0) if key is None else check_key(key, fn=_FN)
    use_align = align_to is not None
    if use_align:
        a = as_float_array(align_to, "align_to", fn=_FN)
        check_finite(a, "align_to", fn=_FN)
        try:
            a = jnp.broadcast_to(a, batch + (n,))
        except ValueError:
            raise ValueError(
                f"The 'align_to' parameter of {_FN} must have shape (n,) = ({n},) or {batch + (n,)}; "
                f"got {tuple(a.shape)}. Pass one value per point (e.g. the SNR of each point)."
            ) from None
        a = a.astype(X.dtype)
    else:
        a = jnp.zeros(batch + (n,), X.dtype)

    B = int(np.prod(batch, dtype=np.int64))
    out = diffusion_map_batched(
        X.reshape((B,) + X.shape[-2:]),
        jnp.asarray(eps_value, X.dtype),
        jnp.asarray(alpha, X.dtype),
        jnp.asarray(t, X.dtype),
        jnp.asarray(1.0 if energy is None else energy, X.dtype),
        a.reshape(B, n),
        key,
        rule=rule, k=k, solver=solver, block_size=block_size, maxiter=maxiter, tol=tol,
        use_energy=energy is not None, use_align=use_align, symmetric=coordinates == "symmetric",
        sequential=solver in ("lobpcg", "krylov") and one_device and (block_size is None or solver == "krylov"),
    )
    coords, w, psi, eps, pi, q, n_kept, mask, min_aff, n_iso, resid, finite, spread = (
        o.reshape(batch + o.shape[1:]) for o in out
    )
    if not np.asarray(finite).all():
        check_finite(np.asarray(X), "X", fn=_FN)  # the worded error, with the first bad index
    same = ~np.asarray(spread)
    if same.any():
        raise _identical_error("X", _FN, tuple(int(i) for i in np.argwhere(np.atleast_1d(same))[0]) if same.ndim else ())
    eps_np = np.asarray(eps)
    if not (np.isfinite(eps_np) & (eps_np > 0)).all():
        raise ValueError(
            f"The 'epsilon' parameter of {_FN} ('{rule}') gave a bandwidth of {float(np.min(eps_np))!r} for some "
            "cloud: most pairs of points are duplicates. Deduplicate the points or pass a number for epsilon."
        )
    res = DiffusionMap(
        coords=coords, eigenvalues=w, eigenvectors=psi, epsilon=eps, stationary=pi, density=q,
        n_kept=n_kept, mask=mask, min_affinity=min_aff, n_isolated=n_iso, residuals=resid,
        alpha=alpha, t=t, epsilon_rule="fixed" if rule is None else rule, energy=energy, solver=solver,
        coordinates=coordinates,
    )
    _warn_degenerate(res)
    _warn_unconverged(res)
    return res


@jax.jit
def _pairwise_distances(coords):
    return jnp.sqrt(sq_distances(coords))


def diffusion_distances(coords):
    """Pairwise diffusion distances: Euclidean distances between diffusion coordinates.

    With all ``n - 1`` components of a map at time t, these equal
    ``||p_t(x_i, .) - p_t(x_j, .)||_{1/pi}`` (Coifman & Lafon 2006).

    Parameters
    ----------
    coords : array of shape (..., n, k), e.g. ``diffusion_map(X).coords``.

    Returns
    -------
    D : array of shape (..., n, n), symmetric, zero diagonal.
    """
    coords = as_float_array(coords, "coords", fn="diffusion_distances", min_ndim=2)
    check_finite(coords, "coords", fn="diffusion_distances")
    batch, (n, k) = coords.shape[:-2], coords.shape[-2:]
    flat = coords.reshape((-1, n, k))
    return jax.vmap(_pairwise_distances)(flat).reshape(batch + (n, n))


@jax.jit
def _nystrom_one(Y, X, eps, q, alpha, lam, psi, t, mask):
    Ky = cross_affinity(Y, X, eps)
    qa_y = jnp.sum(Ky, axis=1) ** (-alpha)
    Ka = Ky * qa_y[:, None] * (q ** (-alpha))[None, :]
    Py = Ka / jnp.sum(Ka, axis=1, keepdims=True)
    lam = jnp.maximum(lam, 0.0)
    # psi(y) = (P_y psi) / lambda, coords = lambda^t psi(y); lambda = 0 columns give 0
    safe = jnp.where(lam > 0, lam, 1.0)
    w = jnp.where((lam > 0) & mask, lam ** t / safe, 0.0)
    return (Py @ psi) * w[None, :]


def diffusion_nystrom(dmap: DiffusionMap, X, Y):
    """Out-of-sample (Nystrom) extension of new points into an existing map.

    For a new point y, ``psi_k(y) = (1 / lambda_k) sum_j p(y, x_j) psi_k(x_j)`` with
    ``p(y, .)`` the row of the Markov matrix built with the map's epsilon, alpha and
    densities; extending the map's own points reproduces ``dmap.coords``.

    Parameters
    ----------
    dmap : DiffusionMap of clouds ``X``.
    X : array of shape (..., n, d), the clouds the map was built from.
    Y : array of shape (..., m, d), new points (same leading axes as X).

    Returns
    -------
    coords : array of shape (..., m, k). Memory is O(m n) per cloud.
    """
    fn = "diffusion_nystrom"
    if getattr(dmap, "coordinates", "markov") != "markov":
        raise ValueError(
            f"The 'dmap' parameter of {fn} must be a map with coordinates='markov' (the extension formula is "
            f"for right eigenvectors of P); got coordinates={dmap.coordinates!r}. Recompute the map with "
            "coordinates='markov'."
        )
    X = as_float_array(X, "X", fn=fn, min_ndim=2)
    Y = as_float_array(Y, "Y", fn=fn, min_ndim=2)
    check_finite(Y, "Y", fn=fn)
    batch = dmap.coords.shape[:-2]
    n, k = dmap.coords.shape[-2:]
    if X.shape[:-2] != batch or X.shape[-2] != n:
        raise ValueError(
            f"The 'X' parameter of {fn} must be the clouds the map was built from, shape {batch + (n,)} + (d,); "
            f"got {tuple(X.shape)}."
        )
    if Y.shape[:-2] != batch or Y.shape[-1] != X.shape[-1]:
        raise ValueError(
            f"The 'Y' parameter of {fn} must have shape {batch} + (m, {X.shape[-1]}) (same batch and features "
            f"as X); got {tuple(Y.shape)}."
        )
    B = int(np.prod(batch, dtype=np.int64))
    dtype = jnp.result_type(X.dtype, Y.dtype)
    flat = lambda a, tail: jnp.asarray(a).reshape((B,) + tail)  # noqa: E731
    out = jax.vmap(_nystrom_one, in_axes=(0, 0, 0, 0, None, 0, 0, None, 0))(
        flat(Y, Y.shape[-2:]).astype(dtype), flat(X, X.shape[-2:]).astype(dtype),
        flat(dmap.epsilon, ()), flat(dmap.density, (n,)), jnp.asarray(dmap.alpha, dtype),
        flat(dmap.eigenvalues, (k,)), flat(dmap.eigenvectors, (n, k)), jnp.asarray(dmap.t, dtype),
        flat(dmap.mask, (k,)),
    )
    return out.reshape(batch + out.shape[1:])
