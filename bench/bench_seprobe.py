"""The SE paper's analysis workload: jaxprobe's public API vs SE-Probe-style torch calls.

    PYTHONPATH=. .venv/bin/python bench/bench_seprobe.py [--small] [--layers L]

Workload (default = the paper's shape): L = 24 MUSE-shaped layers, each with clean
activations (N, C, F) = (50, 16, 128) and noisy ones (S, K, N, C, F) = (41, 18, 50, 16, 128):

* per-utterance biased linear CKA of every noisy item against its clean item
  (L x 36,900 = 885,600 values; rows are the C = 16 channels);
* one diffusion map per layer over its 738 (noise, SNR) centroids (mean over the
  utterances, flattened to C*F = 2048), t = 0.5, median epsilon, 99 % energy: DC1-DC3
  (the paper's Table 1) and the distances between the 41 SNR-level means (Fig. 4).

Baseline: SE-Probe-style torch calls written here from that description (not their code):
a batched torch linear CKA (centre with H, Grams, HSIC, normalise) called once per
(noise, SNR) cell with its 50 utterances, and a torch diffusion map (dense kernel, degree
normalisation, ``torch.linalg.eigh``, energy rule, coordinates, level means, cdist).

jaxprobe: ``jaxprobe.cka(clean, noisy)`` per layer on device-resident arrays (the clean
(N, C, F) broadcast against the noisy (S, K, N, C, F)); ``jaxprobe.diffusion_map`` per
layer computing only what the results need (``n_components=8`` by the Krylov top-k solver
for DC1-DC3, ``group_means`` = the SNR levels: their distances from the all-component
closed form at t = 1/2 where the 8 components hold less than the 99 % energy share) and,
for comparison, with a full eigh of every component.
On the CPU ``jaxprobe.cka`` runs the native per-item kernel (``jaxprobe.native``, an XLA FFI custom
call); ``jax_cka_xla`` times the XLA program it replaces (``jaxprobe._cka_items.item_cka`` with
``native=False``, the path GPUs and TPUs take) and ``jax_cka_native_direct`` the kernel's own call
without the public API around it.
"Best formulation": the fastest plain jitted program measured on the same device arrays
(centred data then Gram, one batch or chunked; or the Gram of the data as read, centred
afterwards, which ``jaxprobe._cka_items`` uses with a guard).
Floors, measured in the same run: the Gram products alone (a batched float32 GEMM of the
same 16 x 128 items, no centring or normalising, in cache-sized chunks); the symmetric Gram
as 3 of its 4 8-row block products (3/4 of the FLOPs); the same Gram products by torch.bmm
(MKL/oneDNN, outside XLA: the fastest small-GEMM kernel measured here); one pass reading the
noisy array (the memory floor); and one 2048^2 float32 GEMM (the CPU's large-GEMM rate).

Threads: the torch baseline is timed at every count of ``--torch-threads`` (default 1 and 2) in
the same rounds, and each torch method's faster count is its baseline (2 threads was 50-80x
slower per call while this 2-core machine was shared by 8 jobs, and 1.4x faster when it was
quiet). OpenBLAS, behind jax's CPU eigh and QR, runs at one thread unless OPENBLAS_NUM_THREADS
is set (see below). Every timed call is followed by an untimed 20 ms pause, so no method
inherits a thread pool that the previous one left spinning.

Bounds: one read of the noisy arrays (the faster of an XLA and a torch sum) plus each map's
symmetric affinity Gram at the large-GEMM rate is what no implementation on this machine can
beat; the bench prints the end-to-end ratio that those floors alone would give.

Every layer uses the same synthetic arrays (noisy = clean + SNR-scaled noise): the work
per layer, not the values, is what is timed. The machine may be shared: absolute times
are noisy; the ratios are measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

# jax's CPU eigh and QR call LAPACK through scipy's OpenBLAS. With OpenBLAS's default threads, its
# pool keeps a core busy after a call: in this bench the public Krylov maps, timed right after the
# eigh route, took 34-38 ms per map instead of 21-22 ms (same script, OPENBLAS_NUM_THREADS=1 vs
# unset, session 15; the eigh itself was no faster with two threads: 55-59 ms either way). Set
# before numpy or jax load OpenBLAS; recorded in the output. torch has its own LAPACK (MKL).
BLAS_THREADS = os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, write_results  # noqa: E402

import jaxprobe  # noqa: E402
from jaxprobe import native  # noqa: E402
from jaxprobe._cka_items import cells_for, item_cka  # noqa: E402
from jaxprobe_kernels.gram import sq_distances  # noqa: E402

T, ENERGY = 0.5, 0.99
# Pause between timed calls (untimed). A thread pool keeps spinning for a while after its last
# parallel region and takes a core from whatever runs next: right after a two-thread torch call,
# jaxprobe.cka took 23.3 ms per layer instead of 17.9 ms (best of 12; a 20 ms pause removes it).
SETTLE = 0.02
TOPK = 8  # components the Krylov solver computes for DC1-DC3: a wider block converges where DC3's gap is ~1 %


# ----------------------------------------------------------------------------- torch baseline
def torch_cka(X, Y):
    """Biased linear CKA of matched (B, n, d) items, the way a research script writes it."""
    import torch

    n = X.shape[-2]
    H = torch.eye(n, dtype=X.dtype, device=X.device) - 1.0 / n
    K = H @ (X @ X.transpose(-1, -2)) @ H
    L = H @ (Y @ Y.transpose(-1, -2)) @ H
    hsic = (K * L).sum(dim=(-2, -1))
    return hsic / torch.sqrt((K * K).sum(dim=(-2, -1)) * (L * L).sum(dim=(-2, -1)))


def torch_layer_cka(clean, noisy):
    """One call per (SNR, noise) cell, its N utterances batched."""
    import torch

    S, K = noisy.shape[:2]
    out = torch.empty(S, K, noisy.shape[2], device=noisy.device)
    for s in range(S):
        for k in range(K):
            out[s, k] = torch_cka(clean, noisy[s, k])
    return out


def torch_diffusion_map(X, t=T, energy=ENERGY):
    """Dense Gaussian kernel (median epsilon over distinct pairs), degree normalisation,
    eigh of the symmetric conjugate, 99 % energy, coords = lambda^t psi."""
    import torch

    sq = (X * X).sum(1)
    D2 = (sq[:, None] + sq[None, :] - 2 * X @ X.T).clamp_min(0)
    D2.fill_diagonal_(0)
    n = X.shape[0]
    iu = torch.triu_indices(n, n, 1)
    eps = torch.quantile(D2[iu[0], iu[1]].double(), 0.5).to(X.dtype) if n < 3000 else D2.median()
    K = torch.exp(-D2 / (2 * eps))
    d = K.sum(1)
    A = K / torch.sqrt(d[:, None] * d[None, :])
    w, V = torch.linalg.eigh(A)
    w, V = w.flip(0), V.flip(1)
    psi = V / V[:, :1]
    w, psi = w[1:].clamp_min(0), psi[:, 1:]
    frac = torch.cumsum(w, 0) / w.sum()
    m = int((frac < energy).sum()) + 1
    return psi[:, :m] * w[:m] ** t


def torch_maps(centroids, labels, S):
    import torch

    coords = torch_diffusion_map(centroids)
    M = torch.zeros(S, centroids.shape[0], dtype=coords.dtype, device=coords.device)
    M[labels, torch.arange(centroids.shape[0], device=coords.device)] = 1.0
    M /= M.sum(1, keepdim=True)
    lc = M @ coords
    return coords[:, :3], torch.cdist(lc, lc)


# ----------------------------------------------------------------------------- jaxprobe
@jax.jit
def best_einsum(clean, noisy):
    """A plain jitted formulation: the clean Grams once, one 16x16 noisy Gram per item."""
    def unit(G):
        return G / jnp.sqrt(jnp.sum(G * G, axis=(-2, -1), keepdims=True))

    c = clean - clean.mean(-2, keepdims=True)
    x = noisy - noisy.mean(-2, keepdims=True)
    gc = unit(jnp.einsum("ucf,udf->ucd", c, c))
    gx = unit(jnp.einsum("...ucf,...udf->...ucd", x, x))
    return jnp.einsum("...ucd,ucd->...u", gx, gc)


@partial(jax.jit, static_argnames=("cells",))
def best_chunked(clean, noisy, *, cells):
    """The same arithmetic as a sequential map over ``cells`` (noise, SNR) cells at a time
    (the working set stays in cache)."""
    S, K, U, n, d = noisy.shape
    c = clean - clean.mean(-2, keepdims=True)
    gc = jnp.einsum("ucf,udf->ucd", c, c)
    gc = gc / jnp.sqrt(jnp.sum(gc * gc, axis=(-2, -1), keepdims=True))

    def step(x):
        x = x - x.mean(-2, keepdims=True)
        g = jnp.einsum("pucf,pudf->pucd", x, x)
        return jnp.einsum("pucd,ucd->pu", g, gc) / jnp.sqrt(jnp.sum(g * g, axis=(-2, -1)))

    return jax.lax.map(step, noisy.reshape(S * K // cells, cells, U, n, d)).reshape(S, K, U)


def dc_and_levels_public(X, snr, S, labels):
    """Today's public route: full eigh with all components, 99 % energy, level distances."""
    m = jaxprobe.diffusion_map(X, t=T, energy=ENERGY, solver="eigh", align_to=snr)
    M = jax.nn.one_hot(labels, S, dtype=X.dtype).T
    M = M / M.sum(1, keepdims=True)
    lc = M @ m.coords
    return m.coords[:, :3], jnp.sqrt(sq_distances(lc))


def dc_and_levels_needs(X, snr, M, key):
    """The public API computing only what the results need: DC1-DC3 by the top-k Krylov solver (``TOPK``
    computed), the level distances as ``group_distances`` (closed form over all components at t = 0.5
    where the top-k do not hold the energy share)."""
    m = jaxprobe.diffusion_map(X, n_components=TOPK, t=T, energy=ENERGY, solver="krylov", align_to=snr, key=key,
                               group_means=M)
    return m.coords[:, :3], m.group_distances, m.group_closed


@partial(jax.jit, static_argnames=("cells",))
def gram_only(noisy, *, cells):
    """The floor of the arithmetic: the 16 x 16 Gram products of every noisy item alone (a batched
    float32 GEMM at the same item shape), ``cells`` (noise, SNR) cells per loop step."""
    S, K, U, n, d = noisy.shape
    return jax.lax.map(lambda x: jnp.einsum("pucf,pudf->pucd", x, x), noisy.reshape(S * K // cells, cells, U, n, d))


@partial(jax.jit, static_argnames=("cells",))
def best_raw_chunked(clean, noisy, *, cells):
    """``best_chunked`` with each noisy Gram the product of the item as read, centred afterwards
    (H G H): no centred copy of the input (``jaxprobe._cka_items`` adds the guard that recomputes
    items whose rows share a large offset from centred data; this plain form has none)."""
    S, K, U, n, d = noisy.shape
    c = clean - clean.mean(-2, keepdims=True)
    gc = jnp.einsum("ucf,udf->ucd", c, c)
    gc = gc / jnp.sqrt(jnp.sum(gc * gc, axis=(-2, -1), keepdims=True))

    def step(x):
        g = jnp.einsum("pucf,pudf->pucd", x, x)
        g = g - g.mean(-1, keepdims=True) - g.mean(-2, keepdims=True) + g.mean((-2, -1), keepdims=True)
        return jnp.einsum("pucd,ucd->pu", g, gc) / jnp.sqrt(jnp.sum(g * g, axis=(-2, -1)))

    return jax.lax.map(step, noisy.reshape(S * K // cells, cells, U, n, d)).reshape(S, K, U)


@partial(jax.jit, static_argnames=("cells",))
def gram_sym_blocks(noisy, *, cells):
    """The symmetric Gram at 3/4 of the FLOPs: 8-row blocks, the two diagonal products and one
    off-diagonal (the upper triangle), same chunks as ``gram_only``."""
    S, K, U, n, d = noisy.shape
    h = n // 2

    def step(x):
        a, b = x[..., :h, :], x[..., h:, :]
        return (jnp.einsum("pucf,pudf->pucd", a, a), jnp.einsum("pucf,pudf->pucd", b, b),
                jnp.einsum("pucf,pudf->pucd", a, b))

    return jax.lax.map(step, noisy.reshape(S * K // cells, cells, U, n, d))


@jax.jit
def read_only(noisy):
    """The memory floor: one pass reading every noisy value (its sum)."""
    return jnp.sum(noisy)


def torch_gram_bmm(noisy_items):
    """The Gram products by torch.bmm (one batched MKL/oneDNN call, the torch thread setting):
    the fastest Gram kernel measured on this CPU, outside XLA (jaxprobe cannot call it)."""
    import torch

    return torch.bmm(noisy_items, noisy_items.transpose(1, 2))


@jax.jit
def gemm_2048(a):
    return a @ a


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true", help="2 layers x 9 SNRs x 6 noises (quick check)")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds over all layers (best kept)")
    ap.add_argument("--torch-threads", default="1,2",
                    help="torch intra-op thread counts for the baseline, comma-separated: each torch method is timed "
                         "at every count in the same rounds and the faster is the baseline (on this 2-core machine 2 "
                         "threads ran 50-80x slower per call while it was shared by 8 jobs, and 1.1-1.5x faster on "
                         "a quiet machine: neither setting is assumed)")
    ap.add_argument("--torch-device", default="cpu",
                    help="where the torch baseline runs (cuda on a GPU machine; jaxprobe uses JAX's default device)")
    ap.add_argument("--tag", default=None, help="results name suffix: seprobe_TAG.json")
    args = ap.parse_args()
    import torch

    dev = torch.device(args.torch_device)

    def sync(out):  # wait for both frameworks: torch's CUDA calls return before the GPU is done
        jax.block_until_ready(out)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    torch_threads = [int(x) for x in str(args.torch_threads).split(",") if x.strip()]
    if not torch_threads or min(torch_threads) < 1:
        raise SystemExit(f"--torch-threads: expected comma-separated counts >= 1, got {args.torch_threads!r}")
    torch.set_num_threads(torch_threads[0])
    L, S, K, N, C, F = (2, 9, 6, 50, 16, 128) if args.small else (24, 41, 18, 50, 16, 128)
    if args.layers:
        L = args.layers
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((N, C, F), dtype=np.float32)
    snr = np.linspace(-10, 30, S).astype(np.float32)
    a = (10 ** (-snr / 20)).astype(np.float32)
    # each noise type has its own spectral pattern (shared by its utterances) plus a random part,
    # scaled by the SNR: the centroids form a structured (SNR x type) cloud, as real ones do
    pattern = rng.standard_normal((1, 1, C, F), dtype=np.float32) + 0.5 * rng.standard_normal((K, 1, C, F), dtype=np.float32)
    noisy = clean[None, None] + a[:, None, None, None, None] * (
        0.8 * pattern[None] + 0.6 * rng.standard_normal((S, K, N, C, F), dtype=np.float32))
    # centroids: mean over utterances, (S, K) cells -> (S*K, C*F), point order (snr, noise)
    cent = noisy.mean(2).reshape(S * K, C * F)
    snr_pts = np.repeat(snr, K)
    labels = np.repeat(np.arange(S), K)
    load0 = open("/proc/loadavg").read().split()[:3]
    print(f"shape: {L} layers x noisy {noisy.shape} vs clean {clean.shape}; loadavg {load0}; "
          f"torch threads {torch_threads} (each timed), OpenBLAS threads {BLAS_THREADS}, XLA CPU devices {jax.devices()}")

    # device-resident inputs
    clean_d, noisy_d, cent_d = jax.device_put(clean), jax.device_put(noisy), jax.device_put(cent)
    jax.block_until_ready((clean_d, noisy_d, cent_d))
    clean_t, noisy_t, cent_t = (torch.from_numpy(a).to(dev) for a in (clean, noisy, cent))
    labels_t = torch.from_numpy(labels).to(dev)
    noisy_items_t = noisy_t.reshape(-1, C, F)  # a view
    key = jax.random.key(0)
    cells = max(1, min(S * K, (1 << 20) // (N * C * F * 4)))
    while (S * K) % cells:
        cells -= 1

    # ---- correctness in the same run
    ref = torch_layer_cka(clean_t, noisy_t).cpu().numpy()
    pub = np.asarray(jaxprobe.cka(clean_d, noisy_d))
    native_on = native.usable(noisy_d, scaled=False, n=C, d=F)
    item_cells = cells_for(noisy_d.shape[-3:], noisy_d.dtype, S * K)
    xla = np.asarray(item_cka(noisy_d, clean_d, debiased_flags=(False,), cells=item_cells, native=False)[0][0])
    ein = np.asarray(best_einsum(clean_d, noisy_d))
    chk = np.asarray(best_chunked(clean_d, noisy_d, cells=cells))
    raw = np.asarray(best_raw_chunked(clean_d, noisy_d, cells=cells))
    err_cka = {k: float(np.max(np.abs(v - ref))) for k, v in (("public", pub), ("xla_program", xla), ("einsum", ein),
                                                              ("chunked", chk), ("raw_chunked", raw))}
    dct, ldt = torch_maps(cent_t, labels_t, S)
    dcp, ldp = dc_and_levels_public(cent_d, snr_pts, S, labels)
    Mlev = np.asarray(jax.nn.one_hot(labels, S, dtype=np.float32)).T
    Mlev = Mlev / Mlev.sum(1, keepdims=True)
    dcn, ldn, closed = dc_and_levels_needs(cent_d, snr_pts, Mlev, key)
    dct, ldt = dct.cpu().numpy(), ldt.cpu().numpy()
    sgn = np.sign(np.sum(dct * np.asarray(dcp), 0))
    err_maps = {
        "dc13_public_vs_torch": float(np.max(np.abs(np.asarray(dcp) - dct * sgn))),
        "dc13_krylov_vs_eigh": float(np.max(np.abs(np.asarray(dcn) - np.asarray(dcp)))),
        "levels_public_vs_torch_rel": float(np.max(np.abs(np.asarray(ldp) - ldt)) / ldt.max()),
        "levels_public_needs_vs_99pct_eigh_rel": float(np.max(np.abs(np.asarray(ldn) - np.asarray(ldp)))
                                                       / float(np.max(ldp))),
        "levels_closed_form_used": bool(closed),
    }
    print("max |diff| CKA vs torch:", err_cka, "\nmaps:", err_maps)

    # ---- timings: every method runs once per layer, interleaved layer by layer (all see the
    # same load over time); a method's time is the sum over the L layers, best of --repeat rounds.
    def at_threads(n, fn):
        def run():
            torch.set_num_threads(n)
            return fn()
        return run

    fns = {}
    for n in torch_threads:
        fns[f"torch_cka_t{n}"] = at_threads(n, lambda: torch_layer_cka(clean_t, noisy_t))
        fns[f"torch_maps_t{n}"] = at_threads(n, lambda: torch_maps(cent_t, labels_t, S))
    fns.update({
        "jax_cka_public": lambda: jaxprobe.cka(clean_d, noisy_d),
        "jax_cka_xla": lambda: item_cka(noisy_d, clean_d, debiased_flags=(False,), cells=item_cells, native=False),
        "jax_cka_native_direct": lambda: item_cka(noisy_d, clean_d, debiased_flags=(False,), cells=item_cells,
                                                  native=True),
        "jax_cka_einsum": lambda: best_einsum(clean_d, noisy_d),
        "jax_cka_chunked": lambda: best_chunked(clean_d, noisy_d, cells=cells),
        "jax_maps_public_eigh": lambda: dc_and_levels_public(cent_d, snr_pts, S, labels),
        "jax_maps_public": lambda: dc_and_levels_needs(cent_d, snr_pts, Mlev, key),
        "jax_gram_only_c1": lambda: gram_only(noisy_d, cells=1),
        "jax_gram_only_c2": lambda: gram_only(noisy_d, cells=2),
        "jax_cka_raw_chunked": lambda: best_raw_chunked(clean_d, noisy_d, cells=cells),
        "jax_gram_sym_blocks_c2": lambda: gram_sym_blocks(noisy_d, cells=2),
        "jax_read_only": lambda: read_only(noisy_d),
        "torch_gram_bmm": at_threads(torch_threads[0], lambda: torch_gram_bmm(noisy_items_t)),
        "torch_read_only": at_threads(max(torch_threads), lambda: noisy_t.sum()),
    })
    for fn in fns.values():  # compile (and warm) every program before timing
        sync(fn())
    t = {k: float("inf") for k in fns}
    for r in range(args.repeat):
        acc = dict.fromkeys(fns, 0.0)
        for layer in range(L):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                sync(fn())
                acc[k] += time.perf_counter() - t0
                time.sleep(SETTLE)  # untimed: no method inherits a thread pool the previous one left spinning
            print(f"\rround {r + 1}/{args.repeat}, layer {layer + 1}/{L}", end="", flush=True)
        t = {k: min(t[k], acc[k]) for k in fns}
    print()
    load1 = open("/proc/loadavg").read().split()[:3]
    # the baseline: each torch method at its faster thread count in this run
    best_threads = {}
    for m in ("torch_cka", "torch_maps"):
        n = min(torch_threads, key=lambda n: t[f"{m}_t{n}"])
        best_threads[m] = n
        t[m] = t[f"{m}_t{n}"]

    best = min(t["jax_cka_einsum"], t["jax_cka_chunked"], t["jax_cka_raw_chunked"], t["jax_cka_xla"],
               t["jax_cka_native_direct"] if native_on else float("inf"))
    gram_best = min(t["jax_gram_only_c1"], t["jax_gram_only_c2"])
    torch_total = t["torch_cka"] + t["torch_maps"]
    jax_total = t["jax_cka_public"] + t["jax_maps_public"]
    ratios = {
        "end_to_end_vs_torch": torch_total / jax_total,
        "cka_public_vs_torch": t["torch_cka"] / t["jax_cka_public"],
        "cka_xla_program_vs_torch": t["torch_cka"] / t["jax_cka_xla"],
        "cka_public_over_xla_program": t["jax_cka_public"] / t["jax_cka_xla"],
        "maps_public_vs_torch": t["torch_maps"] / t["jax_maps_public"],
        "maps_public_eigh_vs_torch": t["torch_maps"] / t["jax_maps_public_eigh"],
        "cka_public_over_best": t["jax_cka_public"] / best,
        "cka_public_over_gram_only": t["jax_cka_public"] / gram_best,
        "cka_public_over_torch_gram_bmm": t["jax_cka_public"] / t["torch_gram_bmm"],
        "cka_public_over_read_only": t["jax_cka_public"] / t["jax_read_only"],
    }
    big = jax.device_put(rng.standard_normal((2048, 2048), dtype=np.float32))
    jax.block_until_ready(gemm_2048(big))
    t_big = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(gemm_2048(big))
        t_big = min(t_big, time.perf_counter() - t0)
    for k, v in t.items():
        print(f"{k:26s} {v:8.3f} s  ({v / L * 1e3:7.1f} ms/layer)")
    for k, v in ratios.items():
        print(f"{k:28s} {v:6.2f}x" if "over" not in k else f"{k:28s} {v:6.2f}" + (" (target <= 1.5)" if k.endswith("best") else ""))
    print(f"loadavg before {load0}, after {load1}")
    flop = L * S * K * N * (2 * C * C * F + 4 * C * C)
    gram_flop = L * S * K * N * 2 * C * C * F
    rates = {  # GFLOP/s
        "cka_public": flop / 1e9 / t["jax_cka_public"],
        "cka_best_formulation": flop / 1e9 / best,
        "gram_only_batched_gemm_16x128": gram_flop / 1e9 / gram_best,
        "gram_sym_blocks_useful": gram_flop / 1e9 / t["jax_gram_sym_blocks_c2"],
        "gram_torch_bmm": gram_flop / 1e9 / t["torch_gram_bmm"],
        "gemm_2048": 2 * 2048 ** 3 / 1e9 / t_big,
        "torch_cka": flop / 1e9 / t["torch_cka"],
    }
    for k, v in rates.items():
        print(f"GFLOP/s {k:32s} {v:7.1f}")
    # What no implementation on this machine can beat: one read of every noisy value (the faster of
    # XLA's and torch's sum) plus each map's symmetric affinity Gram (P^2 D multiply-adds of its
    # lower triangle, 2 flops each: half of the full product) at the large-GEMM rate just measured.
    read_floor = min(t["jax_read_only"], t["torch_read_only"])
    gram_floor = L * (S * K) ** 2 * (C * F) / (rates["gemm_2048"] * 1e9)
    bounds = {
        "cka_read_floor_s": read_floor,
        "read_floor_gb_per_s": noisy.nbytes * L / read_floor / 1e9,
        "maps_gram_floor_s": gram_floor,
        "floor_total_s": read_floor + gram_floor,
        "torch_total_s": torch_total,
        "jax_total_s": jax_total,
        "jax_total_for_10x_s": torch_total / 10,
        "max_end_to_end_ratio_at_floors": torch_total / (read_floor + gram_floor),
        "torch_best_threads": best_threads,
    }
    print(f"floors: read {read_floor:.3f} s ({bounds['read_floor_gb_per_s']:.1f} GB/s) + map Grams {gram_floor:.3f} s"
          f" = {read_floor + gram_floor:.3f} s; 10x needs <= {torch_total / 10:.3f} s; at the floors the ratio "
          f"would be {bounds['max_end_to_end_ratio_at_floors']:.1f}x; torch best threads {best_threads}")
    # 10x end to end needs jax_total <= torch_total / 10; with the maps as measured, the CKA part would
    # have to run at this rate:
    need = flop / 1e9 / max(1e-9, torch_total / 10 - t["jax_maps_public"])
    print(f"10x end to end needs the CKA at {need:.1f} GFLOP/s (maps as measured)" if torch_total / 10 >
          t["jax_maps_public"] else "10x end to end: the maps alone exceed a tenth of the torch time")
    name = "seprobe" + ("_small" if args.small else "") + (f"_{args.tag}" if args.tag else "")
    out = write_results(name, {
        "command": "bench/bench_seprobe.py" + (" --small" if args.small else "")
                   + (f" --torch-device {args.torch_device}" if args.torch_device != "cpu" else ""),
        "devices": {"jax": [str(d) for d in jax.devices()], "torch": str(dev),
                    "torch_device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"},
        "shapes": {"layers": L, "clean": [N, C, F], "noisy": [S, K, N, C, F], "cka_values": L * S * K * N,
                   "map_points": S * K, "map_dim": C * F, "levels": S},
        "native_cka_kernel": native_on,
        "settings": {"t": T, "energy": ENERGY, "epsilon": "median", "cells_per_step": cells},
        "threads": {"torch_timed": torch_threads, "torch_baseline": best_threads, "openblas": BLAS_THREADS,
                    "xla_flags": os.environ.get("XLA_FLAGS", ""), "cpu_count": os.cpu_count()},
        "bounds": bounds,
        "loadavg_before": load0, "loadavg_after": load1,
        "seconds": t, "ratios": ratios, "cka_gflop": flop / 1e9,
        "cka_public_gflops": flop / 1e9 / t["jax_cka_public"],
        "gflops": rates, "gram_gflop": gram_flop / 1e9,
        "cka_gflops_needed_for_10x": (flop / 1e9 / (torch_total / 10 - t["jax_maps_public"])
                                      if torch_total / 10 > t["jax_maps_public"] else None),
        "max_abs_diff_cka_vs_torch": err_cka, "maps_agreement": err_maps,
        "peak_rss_mb": peak_rss_mb(),
        "note": "every layer reuses the same synthetic arrays; the machine may be shared: rely on same-run ratios",
    })
    print("wrote", out)


if __name__ == "__main__":
    main()
