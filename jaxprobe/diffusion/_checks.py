"""Validation and solver choice of :func:`jaxprobe.diffusion.diffusion_map`: every check of its
arguments (worded like the shared validators of ``jaxprobe._validate``), the rule that picks the
eigensolver, the checks of what the jitted call found (non-finite input, identical points, a zero
bandwidth) and the warnings about degenerate kernels and unconverged eigenpairs.

Kept apart from the solver (``map.py``) so that the numerical path reads on its own; the names
here are public inside the package (``map.py``, ``sharded.py`` and ``analysis.py`` use them).
"""
from __future__ import annotations

import numbers
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe._validate import (as_float_array, check_choice, check_finite, check_int, check_key, check_positive,
                                check_real)

EPSILON_RULES = ("median", "bgh")
COORDINATES = ("markov", "symmetric")
SOLVERS = ("auto", "eigh", "lobpcg", "krylov")
DENSE_MAX_N = 8192  # above this n, affinities are built in tiles (block_size=None)
AUTO_EIGH_MAX_N = 256  # solver="auto" uses eigh up to this n
KRYLOV_STEPS = 4  # block Krylov: basis [Q, SQ, ..., S^4 Q] of blocks k + KRYLOV_EXTRA wide
KRYLOV_EXTRA = 2
RESTART_STEPS = 4  # a second Krylov basis from the Ritz vectors before any LOBPCG refinement (0: none)
BLOCK_SIZE = 1024
EPSILON_SUBSAMPLE = 2048  # the tiled path estimates epsilon rules on this many points
ALMOST_ONE = 0.99  # smallest off-diagonal affinity above this: kernel ~ all ones
ALMOST_ZERO = 1e-6  # largest off-diagonal affinity of a point below this: isolated point


class Settings(NamedTuple):
    """The checked arguments of one ``diffusion_map`` call and the solver chosen for them."""

    X: jax.Array
    batch: tuple
    n: int
    rule: str | None
    eps_value: float
    alpha: float
    t: float
    energy: float | None
    solver: str
    coordinates: str
    k: int
    block_size: int | None
    maxiter: int
    tol: float | None
    key: jax.Array
    use_align: bool
    align: np.ndarray  # a jax.Array when align_to came laid out over several devices
    one_device: bool


_FN = "diffusion_map"


def check_shape(X, name, fn):
    # transient: X is only read inside the call, which blocks before returning
    X = as_float_array(X, name, fn=fn, min_ndim=2, transient=True)
    n = X.shape[-2]
    if n < 3:
        raise ValueError(
            f"The '{name}' parameter of {fn} must hold at least 3 points on axis -2 (shape (..., n, d)); "
            f"got shape {tuple(X.shape)}. A diffusion map of fewer than 3 points has no structure."
        )
    return X


def identical_error(name, fn, idx):
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
        raise identical_error(name, fn, idx)
    return X


def check_epsilon(epsilon, fn=_FN):
    if isinstance(epsilon, str):
        return check_choice(epsilon, "epsilon", EPSILON_RULES, fn=fn), 1.0
    if isinstance(epsilon, numbers.Real) and not isinstance(epsilon, bool):
        return None, check_positive(epsilon, "epsilon", fn=fn)
    raise ValueError(
        f"The 'epsilon' parameter of {fn} must be a number > 0 or one of {EPSILON_RULES}. Got {epsilon!r} instead."
    )


def warn_unconverged(res):
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


def warn_degenerate(res):
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



def krylov_basis(k):
    """Columns of the block Krylov basis for k components."""
    return (KRYLOV_STEPS + 1) * (k + KRYLOV_EXTRA)


def on_one_device(X):
    sharding = getattr(X, "sharding", None)
    return sharding is None or len(sharding.device_set) <= 1



def check_settings(X, *, n_components, epsilon, alpha, t, energy, key, align_to, solver, block_size, maxiter, tol,
                   coordinates) -> Settings:
    """Check every argument of ``diffusion_map`` and choose the solver (see its docstring)."""
    # finiteness and identical points are checked inside the jitted call (same errors)
    X = check_shape(X, "X", _FN)
    n = X.shape[-2]
    batch = X.shape[:-2]
    rule, eps_value = check_epsilon(epsilon)
    alpha = check_real(alpha, "alpha", fn=_FN, low=0.0, high=1.0)
    t = check_real(t, "t", fn=_FN, low=0.0)
    if energy is not None:
        energy = check_real(energy, "energy", fn=_FN, low=0.0, high=1.0, low_open=True)
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
    one_device = on_one_device(X)
    if solver == "auto":
        small = n <= AUTO_EIGH_MAX_N or n_components is None or 5 * n_components >= n
        if small and block_size is None:
            solver = "eigh"
        else:
            # float64: the 5-block basis did not meet LOBPCG's float64 test on the benchmark
            # clouds, so LOBPCG would run after it anyway: LOBPCG directly
            krylov = one_device and X.dtype != jnp.float64 and krylov_basis(n_components) < n
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
        if solver == "krylov" and not krylov_basis(k) < n:
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
        # on the host (a few values: no single-op programs to compile), unless laid out over devices
        xp = jnp if isinstance(a, jax.Array) and not on_one_device(a) else np
        try:
            a = xp.broadcast_to(a if xp is jnp else np.asarray(a), batch + (n,))
        except ValueError:
            raise ValueError(
                f"The 'align_to' parameter of {_FN} must have shape (n,) = ({n},) or {batch + (n,)}; "
                f"got {tuple(a.shape)}. Pass one value per point (e.g. the SNR of each point)."
            ) from None
        a = a.astype(X.dtype) if xp is jnp else np.ascontiguousarray(a, dtype=X.dtype)
    else:
        a = np.zeros(batch + (n,), X.dtype)
    return Settings(X=X, batch=batch, n=n, rule=rule, eps_value=eps_value, alpha=alpha, t=t, energy=energy,
                    solver=solver, coordinates=coordinates, k=k, block_size=block_size, maxiter=maxiter, tol=tol,
                    key=key, use_align=use_align, align=a, one_device=one_device)


def check_group_means(M, n, dtype, fn=_FN):
    """Group weights (G, n): finite, >= 0, each row summing to 1 (a weighted mean of points)."""
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[1] != n or M.shape[0] < 1:
        raise ValueError(
            f"The 'group_means' parameter of {fn} must have shape (G, n) = (G, {n}), one row of point weights per "
            f"group; got shape {M.shape}. Build it with jaxprobe.diffusion.group_membership(labels, G, dtype)."
        )
    if not np.all(np.isfinite(M)) or np.any(M < 0) or not np.allclose(M.sum(axis=1), 1.0, rtol=1e-5, atol=1e-6):
        raise ValueError(
            f"The 'group_means' parameter of {fn} must hold finite weights >= 0 whose rows sum to 1; got row sums "
            f"{np.round(M.sum(axis=1)[:3], 6).tolist()}... and minimum {float(np.nanmin(M)) if M.size else 0.0}."
        )
    return jnp.asarray(M, dtype)


def check_outputs(X, finite, spread, eps, rule) -> None:
    """The checks done inside the jitted call, raised with the worded errors: non-finite input,
    a cloud of identical points, a bandwidth rule giving 0."""
    if not np.asarray(finite).all():
        check_finite(np.asarray(X), "X", fn=_FN)  # the worded error, with the first bad index
    same = ~np.asarray(spread)
    if same.any():
        raise identical_error("X", _FN, tuple(int(i) for i in np.argwhere(np.atleast_1d(same))[0]) if same.ndim else ())
    eps_np = np.asarray(eps)
    if not (np.isfinite(eps_np) & (eps_np > 0)).all():
        raise ValueError(
            f"The 'epsilon' parameter of {_FN} ('{rule}') gave a bandwidth of {float(np.min(eps_np))!r} for some "
            "cloud: most pairs of points are duplicates. Deduplicate the points or pass a number for epsilon."
        )
