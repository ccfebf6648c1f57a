"""Out-of-core Gram/CKA from an activation store: equal to the in-memory computation,
and runs in bounded memory on a store larger than the process may allocate."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import jaxprobe
from jaxprobe.streaming import cka_from_centered_grams, store_gram, streaming_cka
from torch_bridge.store import Plan, StoreWriter, open_store

ROOT = Path(__file__).resolve().parents[2]


def _plan(n):
    items = [SimpleNamespace(condition={"snr": float(i % 3)}, utterance=f"u{i // 3}", window=0) for i in range(n)]
    return Plan.from_items(items)


def write_store(path, arrays: dict, chunk_size: int):
    """Store with one item per row of every ``arrays[layer]`` (n, *shape)."""
    n = next(iter(arrays.values())).shape[0]
    w = StoreWriter(path, plan=_plan(n), layers=[{"name": k} for k in arrays], chunk_size=chunk_size, durable=False)
    for k in range(w.n_chunks):
        r = w.chunk_items(k)
        w.write_chunk(k, {name: a[r.start:r.stop] for name, a in arrays.items()})
    return open_store(path)


def ref_centered_gram(X):
    """Plain float64 reference: explicit centring matrix H, K = H X X^T H."""
    X = np.asarray(X, np.float64).reshape(X.shape[0], -1)
    n = X.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return H @ X @ X.T @ H


@pytest.fixture
def small_store(tmp_path, rng):
    a = rng.normal(size=(23, 4, 6)).astype(np.float32) + 3.0  # an offset: centring matters
    b = (a.reshape(23, -1) @ rng.normal(size=(24, 5)) + rng.normal(size=(23, 5))).astype(np.float32)
    return write_store(tmp_path / "s", {"a": a, "b": b.reshape(23, 5, 1)}, chunk_size=7), a, b


@pytest.mark.parametrize("chunk", [5, 24, None])
def test_store_gram_equals_reference(small_store, chunk):
    store, a, _ = small_store
    K = store_gram(store, "a", chunk=chunk)
    assert K.shape == (23, 23) and K.dtype == np.float64
    np.testing.assert_allclose(K, ref_centered_gram(a), rtol=1e-5, atol=1e-4)


def test_store_gram_rows_subset_and_path(small_store):
    store, a, _ = small_store
    rows = np.array([20, 3, 4, 11, 0, 15])
    K = store_gram(store.path, "a", rows=rows, chunk=7)
    np.testing.assert_allclose(K, ref_centered_gram(a[rows]), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(store_gram(store, "a", rows=rows, center=False),
                               a[rows].reshape(6, -1).astype(np.float64) @ a[rows].reshape(6, -1).T.astype(np.float64), rtol=1e-5)


@pytest.mark.parametrize("method", ["gram", "features"])
def test_streaming_cka_equals_in_memory(small_store, method, x64):
    store, a, b = small_store
    want = float(jaxprobe.cka(a.reshape(23, -1).astype(np.float64), b.astype(np.float64)))
    got = streaming_cka(store, "a", "b", method=method, chunk=4)
    assert abs(got - want) < 1e-5
    assert 0.2 < got < 1.0  # a real dependence, not a degenerate value


def test_streaming_cka_debiased_and_matched_rows(small_store, x64):
    store, a, _ = small_store
    rows, rows_y = np.arange(0, 12), np.arange(11, 23)
    A, B = a[rows].reshape(12, -1).astype(np.float64), a[rows_y].reshape(12, -1).astype(np.float64)
    want = float(jaxprobe.cka(A, B, debiased=True))
    got = streaming_cka(store, "a", rows=rows, rows_y=rows_y, debiased=True)
    assert abs(got - want) < 1e-5
    assert abs(streaming_cka(store, "a", rows=rows, rows_y=rows_y, method="features", chunk=5)
               - float(jaxprobe.cka(A, B))) < 1e-5


def test_streaming_rejects_bad_input(small_store):
    store, _, _ = small_store
    with pytest.raises(ValueError, match="'rows' and 'rows_y' parameters of streaming_cka must have the same length"):
        streaming_cka(store, "a", rows=np.arange(5), rows_y=np.arange(6))
    with pytest.raises(ValueError, match=r"plan positions in \[0, 23\)"):
        store_gram(store, "a", rows=np.array([0, 23]))
    with pytest.raises(ValueError, match="'method' parameter of streaming_cka"):
        streaming_cka(store, "a", method="exact")
    with pytest.raises(ValueError, match="constant"):
        cka_from_centered_grams(np.zeros((4, 4)), np.eye(4))


# ----------------------------------------------------------------------------- bounded memory

N_BIG, SHAPE_BIG, RANK = 1000, (64, 1000), 4  # 1000 items x 64,000 float32 = 256 MB per layer
LIMIT_MB = 96  # what the subprocess may allocate beyond its JAX-warm baseline

_BOUNDED = textwrap.dedent(
    """
    import json, resource, sys
    import jax, jax.numpy as jnp, numpy as np
    from jaxprobe.streaming import store_gram
    from torch_bridge.store import open_store
    jax.jit(lambda a: a @ a.T)(jnp.ones((8, 8))).block_until_ready()  # JAX runtime up

    def vmdata():
        for line in open("/proc/self/status"):
            if line.startswith("VmData"):
                return int(line.split()[1]) * 1024

    store = open_store(sys.argv[1])
    limit = vmdata() + int(sys.argv[2]) * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        store.read("a")
        in_memory = "fits"
    except MemoryError:
        in_memory = "MemoryError"
    K = store_gram(store, "a", chunk=int(sys.argv[4]))
    np.save(sys.argv[3], K)
    print("RESULT " + json.dumps({"in_memory": in_memory, "rss0_kb": rss0,
                                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    """
)


def test_store_gram_in_bounded_memory(tmp_path):
    """RLIMIT_DATA caps the private writable memory (heap and anonymous mmaps: numpy and
    XLA buffers) of the subprocess at its warm baseline + 96 MB; read-only file mappings
    of the store do not count. (RLIMIT_AS cannot be used: XLA reserves far more virtual
    address space than it uses.) The 256 MB layer cannot be loaded; the streamed Gram
    (slabs of 1024 features, 4 MB) is computed and equals its low-rank float64 reference."""
    rng = np.random.default_rng(5)
    Z = rng.normal(size=(N_BIG, RANK))
    W = rng.normal(size=(RANK, int(np.prod(SHAPE_BIG)))).astype(np.float32)
    plan = _plan(N_BIG)
    w = StoreWriter(tmp_path / "big", plan=plan, layers=[{"name": "a"}], chunk_size=50, durable=False)
    for k in range(w.n_chunks):
        r = w.chunk_items(k)
        w.write_chunk(k, {"a": (Z[r.start:r.stop].astype(np.float32) @ W).reshape((-1,) + SHAPE_BIG)})
    size_mb = sum(f.stat().st_size for f in (tmp_path / "big" / "chunks").rglob("*.npy")) / 2**20
    assert size_mb > 2 * LIMIT_MB
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    out = tmp_path / "K.npy"
    proc = subprocess.run([sys.executable, "-c", _BOUNDED, str(tmp_path / "big"), str(LIMIT_MB), str(out), "1024"],
                          capture_output=True, text=True, timeout=200, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
    assert res["in_memory"] == "MemoryError"
    # resident growth (file pages included) stays far below the layer's size
    assert (res["maxrss_kb"] - res["rss0_kb"]) / 1024 < 0.6 * size_mb
    Zc = Z.astype(np.float32).astype(np.float64)
    Zc -= Zc.mean(axis=0)
    W64 = W.astype(np.float64)
    K_ref = Zc @ (W64 @ W64.T) @ Zc.T
    K = np.load(out)
    np.testing.assert_allclose(K, K_ref, rtol=1e-4, atol=1e-4 * np.abs(K_ref).max())
