"""Sharded analyses on several host devices equal the single-device path.

XLA_FLAGS must be set before jax is imported, so the multi-device checks run in one
subprocess (4 CPU devices) that prints its measurements as JSON; the tests below judge
them. The multi-host test starts two processes joined by jax.distributed on 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxprobe
from jaxprobe.distributed import as_mesh, make_mesh, mesh_from_config

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    import jaxprobe
    from jaxprobe.diffusion import diffusion_map
    from jaxprobe.distributed import make_mesh, sharded_diffusion_map

    out = {"devices": len(jax.devices())}
    rng = np.random.default_rng(0)
    key = jax.random.key(7)
    n = 30
    X = rng.normal(size=(n, 12)).astype(np.float32)
    Y = (X @ rng.normal(size=(12, 5)) + rng.normal(size=(n, 5))).astype(np.float32)
    groups = np.repeat(np.arange(5), 6)
    # bootstrap_cka: 37 replicates (not a multiple of 2, 3 or 4), every device count
    for design, kw in (("iid", {}),):
        ref = jaxprobe.bootstrap_cka(X, Y, key=key, n_boot=37, chunk=8, **kw)
        out[f"cka_{design}_ref"] = np.asarray(ref.replicates).tolist()
        out[f"cka_{design}_ref_lohi"] = [float(ref.low), float(ref.high)]
        for m in (2, 4):
            r = jaxprobe.bootstrap_cka(X, Y, key=key, n_boot=37, chunk=8, mesh=make_mesh(m), **kw)
            out[f"cka_{design}_{m}"] = np.asarray(r.replicates).tolist()
            out[f"cka_{design}_{m}_lohi"] = [float(r.low), float(r.high)]
    # bootstrap_mean on a (layers, SNRs, items) block: noise-type cluster and hierarchical designs
    v = rng.normal(size=(3, 4, 30))
    for design, hier, m in (("cluster", False, 4), ("hier", True, 3)):
        ref = jaxprobe.bootstrap_mean(v, key=key, n_boot=50, groups=groups, hierarchical=hier)
        r = jaxprobe.bootstrap_mean(v, key=key, n_boot=50, groups=groups, hierarchical=hier, mesh=m)
        out[f"mean_{design}_ref"] = np.asarray(ref.replicates).tolist()
        out[f"mean_{design}_{m}"] = np.asarray(r.replicates).tolist()
    # per-item CKA: batch (3, 5) = 15 pairs (uneven over 4), clean side broadcast
    Xb = rng.normal(size=(3, 5, 16, 20)).astype(np.float32)
    Yb = rng.normal(size=(5, 16, 12)).astype(np.float32)
    out["cka_batch_ref"] = np.asarray(jaxprobe.cka(Xb, Yb, debiased=True)).tolist()
    out["cka_batch_4"] = np.asarray(jaxprobe.cka(Xb, Yb, debiased=True, mesh="all")).tolist()
    Yp = rng.normal(size=(3, 1, 16, 12)).astype(np.float32)  # broadcast inside: pairs split
    out["cka_rbf_ref"] = np.asarray(jaxprobe.cka(Xb, Yp, kernel="rbf")).tolist()
    out["cka_rbf_3"] = np.asarray(jaxprobe.cka(Xb, Yp, kernel="rbf", mesh=3)).tolist()
    out["cka_swap_ref"] = np.asarray(jaxprobe.cka(Yb, Xb)).tolist()
    out["cka_swap_4"] = np.asarray(jaxprobe.cka(Yb, Xb, mesh=4)).tolist()
    # a constant item raises the one constant-representation error on any device count
    errors = {}
    Xz, Yz = Xb.copy(), Yb.copy()
    Xz[2, 4] = 0.0
    Yz[3] = 1.0
    for label, call in (("x_linear_4", lambda: jaxprobe.cka(Xz, Yb, mesh=4)),
                        ("y_debiased_4", lambda: jaxprobe.cka(Xb, Yz, debiased=True, mesh=4)),
                        ("y_rbf_3", lambda: jaxprobe.cka(Xb, Yz, kernel="rbf", mesh=3)),
                        ("boot_2", lambda: jaxprobe.bootstrap_cka(Xz[2], Yb, key=key, n_boot=9, mesh=2))):
        try:
            call()
            errors[label] = None
        except ValueError as e:
            errors[label] = str(e)
    out["constant_errors"] = errors
    # diffusion maps of 5 clouds (uneven over 4); LOBPCG starts from the per-cloud keys
    C = rng.normal(size=(5, 40, 3)).astype(np.float32)
    for solver in ("lobpcg", "krylov"):
        d1 = diffusion_map(C, n_components=3, solver=solver, key=key)
        d4 = sharded_diffusion_map(C, n_components=3, solver=solver, key=key, mesh=4)
        out[f"dm_{solver}_ref"] = [np.asarray(d1.eigenvalues).tolist(), np.asarray(d1.coords).tolist()]
        out[f"dm_{solver}_4"] = [np.asarray(d4.eigenvalues).tolist(), np.asarray(d4.coords).tolist()]
    print("RESULT " + json.dumps(out))
    """
)


def run_with_devices(script: str, n_devices: int, *, timeout: float = 240, args=()) -> dict:
    """Run ``script`` in a fresh python with ``n_devices`` host devices; parse its
    ``RESULT {json}`` line."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert line, proc.stdout[-2000:]
    return json.loads(line[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def four():
    return run_with_devices(_SCRIPT, 4)


def test_subprocess_sees_four_devices(four):
    assert four["devices"] == 4


@pytest.mark.parametrize("design", ["iid"])
def test_bootstrap_cka_replicates_identical_for_every_device_count(four, design):
    ref = np.asarray(four[f"cka_{design}_ref"])
    assert ref.shape == (37,) and np.ptp(ref) > 0
    for m in (2, 4):
        got = np.asarray(four[f"cka_{design}_{m}"])
        # same count rows (fold_in per replicate id), same GEMM per replicate: float32 round-off at most
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, err_msg=f"mesh of {m}")
        np.testing.assert_allclose(four[f"cka_{design}_{m}_lohi"], four[f"cka_{design}_ref_lohi"], rtol=1e-5)


@pytest.mark.parametrize("design, m", [("cluster", 4), ("hier", 3)])
def test_bootstrap_mean_sharded_equals_single_device(four, design, m):
    ref = np.asarray(four[f"mean_{design}_ref"])
    assert ref.shape == (50, 3, 4) and np.ptp(ref) > 0
    # counts drawn on the mesh, means by the single-device GEMM: bit-identical
    np.testing.assert_array_equal(np.asarray(four[f"mean_{design}_{m}"]), ref)


def test_per_item_cka_sharded_with_uneven_batch(four):
    ref = np.asarray(four["cka_batch_ref"])
    assert ref.shape == (3, 5)
    np.testing.assert_allclose(np.asarray(four["cka_batch_4"]), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(four["cka_rbf_3"]), np.asarray(four["cka_rbf_ref"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(four["cka_swap_4"]), np.asarray(four["cka_swap_ref"]), rtol=1e-4, atol=1e-5)
    assert np.asarray(four["cka_rbf_3"]).shape == (3, 5)


def test_constant_item_raises_on_every_mesh(four):
    e = four["constant_errors"]
    assert "'X' parameter of cka is a constant representation at batch index (2, 4)" in e["x_linear_4"]
    assert "'Y' parameter of cka is a constant representation at batch index (3,)" in e["y_debiased_4"]
    assert "'Y' parameter of cka is a constant representation at batch index (3,)" in e["y_rbf_3"]
    assert "'X' parameter of bootstrap_cka is a constant representation at batch index (4,)" in e["boot_2"]


@pytest.mark.parametrize("solver", ["lobpcg", "krylov"])
def test_diffusion_maps_sharded_over_clouds(four, solver):
    w1, c1 = (np.asarray(a) for a in four[f"dm_{solver}_ref"])
    w4, c4 = (np.asarray(a) for a in four[f"dm_{solver}_4"])
    assert w4.shape == (5, 3) and c4.shape == (5, 40, 3)
    np.testing.assert_allclose(w4, w1, rtol=1e-4, atol=1e-5)
    # signs are fixed by the largest entry; compare coordinates up to round-off
    np.testing.assert_allclose(c4, c1, atol=5e-4)


def test_mesh_of_one_device_equals_default_path(key, rng):
    X = rng.normal(size=(20, 6))
    Y = X[:, :3] + 0.5 * rng.normal(size=(20, 3))
    a = jaxprobe.bootstrap_cka(X, Y, key=key, n_boot=11)
    b = jaxprobe.bootstrap_cka(X, Y, key=key, n_boot=11, mesh=1)
    np.testing.assert_allclose(np.asarray(b.replicates), np.asarray(a.replicates), rtol=1e-6)
    assert b.replicates.shape == (11,) and b.replicates.dtype == a.replicates.dtype


def test_make_mesh_validates_devices():
    assert make_mesh("all").size == len(jax.devices())
    assert as_mesh(None) is None
    m = make_mesh(1)
    assert make_mesh(m) is m
    with pytest.raises(ValueError, match=r"'devices' parameter of make_mesh must be an int in \[1,"):
        make_mesh(len(jax.devices()) + 1)
    with pytest.raises(ValueError, match="'all'"):
        make_mesh("gpu")
    with pytest.raises(ValueError, match="'mesh' parameter of bootstrap_mean"):
        as_mesh(0, "bootstrap_mean")


_HOST = textwrap.dedent(
    """
    import json, sys
    import jax
    from jaxprobe.distributed import initialize, make_mesh
    pid, port = int(sys.argv[1]), sys.argv[2]
    initialize(f"127.0.0.1:{port}", 2, pid, initialization_timeout=60)
    import numpy as np, jaxprobe
    v = np.random.default_rng(0).normal(size=(3, 21))
    r = jaxprobe.bootstrap_mean(v, key=jax.random.key(5), n_boot=13, mesh=make_mesh("all"))
    print("RESULT " + json.dumps({"procs": jax.process_count(), "devices": len(jax.devices()),
                                  "local": len(jax.local_devices()), "reps": np.asarray(r.replicates).tolist()}))
    jax.distributed.shutdown()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_loopback_share_one_mesh(key):
    """jax.distributed on CPU (gloo collectives): 2 processes x 2 devices form one
    4-device mesh; both processes get the replicates of the one-process path."""
    port = str(_free_port())
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", _HOST, str(i), port], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT) for i in range(2)]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=150)
            assert p.returncode == 0, err[-3000:]
            outs.append(json.loads([l for l in out.splitlines() if l.startswith("RESULT ")][-1][7:]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    v = np.random.default_rng(0).normal(size=(3, 21))
    ref = np.asarray(jaxprobe.bootstrap_mean(v, key=jax.random.key(5), n_boot=13).replicates)
    for o in outs:
        assert (o["procs"], o["devices"], o["local"]) == (2, 4, 2)
        np.testing.assert_allclose(np.asarray(o["reps"]), ref, rtol=1e-5, atol=1e-6)


def test_mesh_from_config_is_the_studies_one_rule():
    """compute.devices "1" keeps the single-device path (no mesh); "all" and a count build one."""
    assert mesh_from_config("1") is None and mesh_from_config(1) is None
    assert len(mesh_from_config("all").devices.flat) == jax.device_count()
    n = jax.device_count()
    assert mesh_from_config(str(n)) is None if n == 1 else len(mesh_from_config(str(n)).devices.flat) == n
    with pytest.raises(ValueError, match="'devices' parameter of make_mesh"):
        mesh_from_config(str(jax.device_count() + 1))
