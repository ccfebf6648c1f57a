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
  ``sum(lambda)`` over all ``n - 1`` nontrivial eigenvalues reaches ``energy``. That sum is
  known without the spectrum, ``tr(S) - 1 = sum_i c_i^2 - 1`` (``energy_total``), so a top-k
  solver applies the same rule as a full ``eigh`` (``n_kept`` is then at most ``k``; with
  ``eigh`` the sum of the computed eigenvalues is used, the same number up to round-off).
  Shapes stay fixed inside the batched call: ``n_kept`` (per cloud) and ``mask`` say what is
  kept, and ``coords`` is zero in the dropped columns (so distances use only kept ones).
* Group distances (``group_means``): distances between weighted means of the coordinates
  (e.g. the SNR levels of the SE paper's Fig. 4). When the computed components hold every
  component the energy rule keeps, they come from the kept coordinates (the same numbers
  a full ``eigh`` gives). When they do not (a top-k solve whose k components hold less than
  ``energy`` of the spectrum) and t = 1/2 on a dense operator, they come from the closed form
  over all ``n - 1`` components (``kernels.diffusion_distance``: no eigendecomposition), which
  exceeds the energy-truncated distance by the dropped tail only:
  ``D_all^2 - D_kept^2 = sum_{j > m} lambda_j (Delta . psi_j)^2 <= lambda_{m+1} sum_i Delta_i^2 / pi_i``
  (``Delta`` the difference of the two weight rows), and over all point pairs the pi-weighted mean of
  the squared distances loses exactly the dropped share of ``sum(lambda)``, at most ``1 - energy``.
  ``group_closed`` says which clouds used the closed form.
"""
from __future__ import annotations
from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.sparse.linalg import lobpcg_standard

from jaxprobe import native
from jaxprobe.diffusion._checks import (
    ALMOST_ZERO,
    EPSILON_SUBSAMPLE,
    KRYLOV_EXTRA,
    RESTART_STEPS,
    KRYLOV_STEPS,
    check_group_means,
    check_outputs,
    check_settings,
    warn_degenerate,
    warn_unconverged,
)
from jaxprobe_kernels.affinity import (
    affinity_matvec,
    default_gram_blocks,
    epsilon_bgh,
    epsilon_median,
    gaussian_affinity,
    symmetric_sq_distances,
)
from jaxprobe_kernels.diffusion_distance import group_sq_distances, group_sq_distances_symmetric
from jaxprobe_kernels.gram import sq_distances
from jaxprobe_kernels.krylov import block_krylov_eigh, converged


@partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "coords", "eigenvalues", "eigenvectors", "epsilon", "stationary", "density",
        "n_kept", "mask", "min_affinity", "n_isolated", "residuals", "energy_total", "group_distances",
        "group_closed",
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
    energy_total : array of shape (...), ``sum`` of all ``n - 1`` nontrivial eigenvalues
        (``tr(S) - 1``, no spectrum needed).
    group_distances : array of shape (..., G, G) or None, distances between the group means
        of ``group_means`` (see the module docstring).
    group_closed : bool array of shape (...) or None, True where ``group_distances`` came from
        the all-component closed form (t = 1/2) instead of the kept coordinates.
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
    energy_total: jax.Array = None
    group_distances: jax.Array = None
    group_closed: jax.Array = None



# ----------------------------------------------------------------------------- one cloud


def _epsilon(D2, eps_value, rule, native_median=False):
    """The bandwidth of one cloud's distances ``D2``. ``native_median`` (static): the median rule
    on the native CPU library (``jaxprobe.native.upper_median``, the same bits as
    ``epsilon_median`` in one radix pass instead of ~26 counting passes: 0.54 vs 3.46 ms for
    738 points here, bench/bench_median.py)."""
    if rule == "median":
        return native.upper_median(D2) if native_median else epsilon_median(D2)
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


def _dense_operator(X, eps_value, alpha, *, rule, native_median=False):
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
    eps = _epsilon(D2, eps_value, rule, native_median)
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

    return apply, dense, eps, deg, q, min_aff, n_iso, K, qa, c


def _blocked_operator(X, eps_value, alpha, key, *, rule, block_size, native_median=False):
    """The same operator as a function, affinities rebuilt in tiles at every product.

    Epsilon rules and the degeneracy check use a random subsample of at most
    ``EPSILON_SUBSAMPLE`` points (all points when n is smaller).
    """
    n = X.shape[0]
    m = min(n, EPSILON_SUBSAMPLE)
    idx = jax.random.choice(key, n, (m,), replace=False) if m < n else jnp.arange(n)
    D2s = sq_distances(X[idx])
    eps = _epsilon(D2s, eps_value, rule, native_median)
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

    return op, eps, deg, q, min_aff, n_iso, scale


def _finish(w, V, deg, t, energy, align, *, k, use_energy, use_align, symmetric=False, total=None):
    """Truncate to k, map to right eigenvectors, fix signs, weight by lambda^t.

    ``w`` (decreasing) holds every computed nontrivial eigenvalue; the energy share
    is taken over ``total`` (the sum of all n - 1, known without the spectrum) or, when
    None, over the computed ones.
    """
    lam_all = jnp.maximum(w, 0.0)
    if use_energy:
        total = jnp.sum(lam_all) if total is None else total
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


def _group_sq(coords, w, mask, total, energy, closed_sq, M, *, k, n, use_energy):
    """Squared distances between the group means ``M`` (G, n) of the kept coordinates, or the
    closed form ``closed_sq`` (all components, t = 1/2) where the k computed components do not
    hold every component the energy rule keeps. Returns (G, G) and the closed-form flag."""
    lm = M @ coords
    kept = sq_distances(lm)
    if k == n - 1 or closed_sq is None:
        return kept, jnp.asarray(False)
    lam = jnp.maximum(w, 0.0)
    if use_energy:
        complete = jnp.sum(lam * mask) >= energy * (1 - 1e-6) * total
    else:
        complete = jnp.asarray(False)
    return jnp.where(complete, kept, closed_sq), ~complete


def _one_cloud(X, eps_value, alpha, t, energy, align, key, M=None, *, rule, k, solver, block_size,
               maxiter, tol, use_energy, use_align, symmetric=False, closed=None, native_median=False):
    """One cloud. ``M`` (G, n): group weights for group distances; ``closed``: None,
    "markov" or "symmetric", the coordinates of the group distances and of the t = 1/2 closed
    form to fall back on (static; the caller checks t)."""
    n = X.shape[0]
    ksub, kinit = jax.random.split(key)
    if block_size is None:
        apply, dense, eps, deg, q, min_aff, n_iso, K, qa, c = _dense_operator(X, eps_value, alpha, rule=rule,
                                                                              native_median=native_median)
    else:
        apply, eps, deg, q, min_aff, n_iso, c = _blocked_operator(
            X, eps_value, alpha, ksub, rule=rule, block_size=block_size, native_median=native_median
        )
    total = jnp.sum(c * c) - 1.0  # tr(S) - 1: K has a unit diagonal
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
            # LOBPCG's own test decides; a pair that fails it sends the Ritz vectors to a second
            # Krylov basis, then (failing again) to LOBPCG as its start (under lax.map only the
            # branch taken runs). bench_seprobe's clustered DC2-DC8 (738 points): 21.2-32.8 ms per
            # map with a 4-step restart (worst residual 3.5e-4), 26.2-36.0 without (LOBPCG ran:
            # 5.5e-4); an 8-step restart reaches 3e-7 but took 35-44 ms in the same runs
            v0 = jnp.sqrt(deg / jnp.sum(deg))[:, None]
            X0 = jax.random.normal(kinit, (n, k + KRYLOV_EXTRA), X.dtype)
            w, V, SV = block_krylov_eigh(apply, X0, v0, k=k, steps=KRYLOV_STEPS)
            tol_k = jnp.finfo(X.dtype).eps if tol is None else tol
            ok = converged(w, V, SV, tol_k)
            if RESTART_STEPS:
                def restart(V):
                    # a second Krylov basis from the Ritz vectors (and the start's extra columns):
                    # converges where the first stopped short, at a quarter of LOBPCG's cost
                    w2, V2, SV2 = block_krylov_eigh(apply, jnp.concatenate([V, X0[:, k:]], axis=1), v0, k=k,
                                                    steps=RESTART_STEPS)
                    return jax.lax.cond(converged(w2, V2, SV2, tol_k), lambda V: (w2, V), run_lobpcg, V2)

                w, V = jax.lax.cond(ok, lambda V: (w, V), restart, V)
            else:
                w, V = jax.lax.cond(ok, lambda V: (w, V), run_lobpcg, V)
        else:
            w, V = run_lobpcg(jax.random.normal(kinit, (n, k), X.dtype))
    Vk = V[:, :k]
    residual = jnp.linalg.norm(apply(Vk) - Vk * w[None, :k], axis=0)
    coords, w, psi, pi, n_kept, mask = _finish(
        w, V, deg, t, energy, align, k=k, use_energy=use_energy, use_align=use_align, symmetric=symmetric,
        total=None if solver == "eigh" else total,
    )
    # input checks, done here instead of in extra host passes over X: raised by the caller
    finite = jnp.all(jnp.isfinite(X))
    spread = jnp.any(jnp.max(X, axis=0) > jnp.min(X, axis=0))
    if M is None:
        gd2, gclosed = jnp.zeros((1, 1), X.dtype), jnp.asarray(False)
    else:
        closed_sq = None
        if closed is not None and block_size is None and k < n - 1:
            closed_sq = (group_sq_distances_symmetric if closed == "symmetric" else group_sq_distances)(K, qa, M)
        # group distances in the closed form's convention (the bootstrap asks for symmetric distances of Markov maps)
        gc = coords * jnp.sqrt(pi)[:, None] if closed == "symmetric" and not symmetric else coords
        gd2, gclosed = _group_sq(gc, w, mask, total, energy, closed_sq, M, k=k, n=n, use_energy=use_energy)
    return (coords, w, psi, eps, pi, q, n_kept, mask, min_aff, n_iso, residual, finite, spread, total,
            jnp.sqrt(gd2), gclosed)


@partial(
    jax.jit,
    static_argnames=("rule", "k", "solver", "block_size", "maxiter", "tol", "use_energy", "use_align",
                     "sequential", "symmetric", "closed", "native_median"),
)
def diffusion_map_batched(X, eps_value, alpha, t, energy, align, key, M=None, *, sequential, **static):
    """X (B, n, d), align (B, n), key: one PRNG key, M: None or group weights (G, n) shared by
    the clouds -> tuple of (B, ...) arrays (the last three: energy total, group distances (B, G, G)
    or (B, 1, 1) zeros without M, closed-form flags).

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
        return jax.lax.map(lambda a: fn(a[0], eps_value, alpha, t, energy, a[1], a[2], M), (X, align, keys))
    return jax.vmap(fn, in_axes=(0, None, None, None, None, 0, 0, None))(
        X, eps_value, alpha, t, energy, align, keys, M
    )



@partial(jax.jit, static_argnames=("batch",))
def _unflatten(out, *, batch):
    """The batched call's outputs (B, ...) back to the leading axes ``batch``: one program, not one
    reshape program per output."""
    return tuple(o.reshape(batch + o.shape[1:]) for o in out)


# ----------------------------------------------------------------------------- public API


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
    group_means=None,
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
        Keep the fewest components whose cumulative share of all n - 1 nontrivial
        eigenvalues reaches it (the sum is ``tr(S) - 1``, so top-k solvers apply the same
        rule; they keep at most k); ``n_kept``/``mask`` per cloud, dropped columns of
        ``coords`` are zero.
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
    group_means : array of shape (G, n) or None
        Weights of G groups of points (rows >= 0 summing to 1, e.g. the points of each SNR
        level): ``group_distances`` (..., G, G) between the groups' mean coordinates, from the
        kept coordinates, or at t = 1/2 from the all-component closed form where a top-k solve
        does not hold every component the energy rule keeps (``group_closed``; module docstring).

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
    s = check_settings(X, n_components=n_components, epsilon=epsilon, alpha=alpha, t=t, energy=energy, key=key,
                       align_to=align_to, solver=solver, block_size=block_size, maxiter=maxiter, tol=tol,
                       coordinates=coordinates)
    batch, n = s.batch, s.n
    M = None if group_means is None else check_group_means(group_means, n, s.X.dtype)
    B = int(np.prod(batch, dtype=np.int64))
    out = diffusion_map_batched(
        s.X.reshape((B,) + s.X.shape[-2:]),
        jnp.asarray(s.eps_value, s.X.dtype),
        jnp.asarray(s.alpha, s.X.dtype),
        jnp.asarray(s.t, s.X.dtype),
        jnp.asarray(1.0 if s.energy is None else s.energy, s.X.dtype),
        s.align.reshape(B, n),
        s.key,
        M,
        rule=s.rule, k=s.k, solver=s.solver, block_size=s.block_size, maxiter=s.maxiter, tol=s.tol,
        use_energy=s.energy is not None, use_align=s.use_align, symmetric=s.coordinates == "symmetric",
        closed=s.coordinates if M is not None and s.t == 0.5 else None,
        native_median=s.rule == "median" and native.median_usable(s.X),
        sequential=(s.solver in ("lobpcg", "krylov") and s.one_device
                    and (s.block_size is None or s.solver == "krylov")),
    )
    if batch != (B,):
        out = _unflatten(out, batch=batch)
    coords, w, psi, eps, pi, q, n_kept, mask, min_aff, n_iso, resid, finite, spread, total, gd, gclosed = out
    # finiteness and identical points were checked inside the jitted call (same errors)
    check_outputs(s.X, finite, spread, eps, s.rule)
    res = DiffusionMap(
        coords=coords, eigenvalues=w, eigenvectors=psi, epsilon=eps, stationary=pi, density=q,
        n_kept=n_kept, mask=mask, min_affinity=min_aff, n_isolated=n_iso, residuals=resid,
        alpha=s.alpha, t=s.t, epsilon_rule="fixed" if s.rule is None else s.rule, energy=s.energy, solver=s.solver,
        coordinates=s.coordinates, energy_total=total,
        group_distances=None if M is None else gd, group_closed=None if M is None else gclosed,
    )
    warn_degenerate(res)
    warn_unconverged(res)
    return res
