"""Data-parallel probe training (train_probes(mesh=...)) on 1, 2 and 4 host devices equals the
one-device run; uneven batches; checkpoint/resume with a mesh.

XLA_FLAGS must be set before jax is imported, so the runs happen in one subprocess with 4 CPU
devices (as in test_distributed.py) that prints its measurements as JSON; the tests judge them.

Tolerance: the sharded step sums each device's part of the loss and gradient (psum) where one
device sums them in one reduction, so float32 summation order differs: after 20 Adam steps the
parameters agree to atol 2e-6 (observed ~2e-7) and held-out L1 to rtol 1e-5.
"""
from __future__ import annotations

import textwrap

import jax
import numpy as np
import pytest

from jaxprobe.probe import ProbeConfig, TrainConfig, train_probes
from tests.jaxprobe.test_distributed import run_with_devices

_SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, shutil, sys, tempfile
    import jax, numpy as np
    from jaxprobe.probe import TrainConfig, probe_frames, train_probes
    from tests.jaxprobe.test_probe_train import PROBE, RATES, _corpus

    acts, mels = _corpus(0)
    vacts, vmels = _corpus(1, 3)
    d, v = probe_frames(acts, mels, RATES), probe_frames(vacts, vmels, RATES)
    key = jax.random.key(3)
    # eval_blocks=5: held-out chunks uneven over 2 and 4 devices as well
    cfg = TrainConfig(steps=20, batch_blocks=8, learning_rate=1e-2, warmup_steps=5, eval_every=10,
                      patience=50, eval_blocks=5)

    def dump(r):
        return {"history": r.history, "step": r.step, "finished": r.finished,
                "params": {n: jax.tree.map(lambda a: np.asarray(a).tolist(), p) for n, p in r.params.items()}}

    out = {"devices": len(jax.devices()), "n_blocks": d.n_blocks}
    tmp = tempfile.mkdtemp()
    out["ref"] = dump(train_probes(d, key=key, valid=v, config=cfg, probe=PROBE))
    for m in (1, 2, 4):
        ck = {"checkpoint_dir": f"{tmp}/a"} if m == 4 else {}  # the uninterrupted run of the resume test
        out[f"mesh{m}"] = dump(train_probes(d, key=key, valid=v, config=cfg, probe=PROBE, mesh=m, **ck))
    odd = dataclasses.replace(cfg, batch_blocks=7)  # uneven over 4 devices: one zero-weight block
    out["odd_ref"] = dump(train_probes(d, key=key, valid=v, config=odd, probe=PROBE))
    out["odd_mesh4"] = dump(train_probes(d, key=key, valid=v, config=odd, probe=PROBE, mesh=4))
    # resume: stopped at step 10 on 4 devices and dropped, resumed on 4 (exactly equal) and on 2
    # devices (a checkpoint records no device count)
    half = train_probes(d, key=key, valid=v, config=cfg, probe=PROBE, mesh=4, checkpoint_dir=f"{tmp}/b",
                        stop_at_step=10)
    out["half_step"], out["half_finished"] = half.step, half.finished
    del half
    shutil.copytree(f"{tmp}/b", f"{tmp}/c")
    out["resumed4"] = dump(train_probes(d, key=key, valid=v, config=cfg, probe=PROBE, mesh=4,
                                        checkpoint_dir=f"{tmp}/b"))
    out["resumed2"] = dump(train_probes(d, key=key, valid=v, config=cfg, probe=PROBE, mesh=2,
                                        checkpoint_dir=f"{tmp}/c"))
    shutil.rmtree(tmp)
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def runs():
    return run_with_devices(_SCRIPT, 4)


def _close(got, ref, *, exact=False):
    assert got["step"] == ref["step"] and got["finished"] == ref["finished"]
    assert [h["step"] for h in got["history"]] == [h["step"] for h in ref["history"]]
    if exact:
        assert got["history"] == ref["history"]
    for hg, hr in zip(got["history"], ref["history"]):
        for part in ("train_l1", "valid_l1"):
            if part in hr:
                assert hg[part].keys() == hr[part].keys()
                for n in hr[part]:
                    np.testing.assert_allclose(hg[part][n], hr[part][n], rtol=1e-5, err_msg=f"{part} {n}")
    assert got["params"].keys() == ref["params"].keys()
    check = np.testing.assert_array_equal if exact else (
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6))
    jax.tree.map(lambda a, b: check(np.asarray(a), np.asarray(b)), got["params"], ref["params"])


@pytest.mark.slow  # one ~30 s subprocess (seven compilations) for all of them
def test_subprocess_sees_four_devices(runs):
    assert runs["devices"] == 4 and runs["n_blocks"] > 8


@pytest.mark.slow
@pytest.mark.parametrize("m", [1, 2, 4])
def test_sharded_training_equals_single_device(runs, m):
    ref = runs["ref"]
    assert ref["step"] == 20 and len(ref["history"]) == 2
    first, last = ref["history"][0]["valid_l1"], ref["history"][-1]["valid_l1"]
    assert all(last[n] < first[n] for n in last)  # it trained
    _close(runs[f"mesh{m}"], ref)


@pytest.mark.slow
def test_uneven_batch_over_devices(runs):
    # 7 blocks per step on 4 devices: one zero-weight padding block (block 0), which would pull the
    # result away from the one-device run (tolerance 2e-6) if it carried any weight
    _close(runs["odd_mesh4"], runs["odd_ref"])


@pytest.mark.slow
def test_resume_with_mesh(runs):
    assert runs["half_step"] == 10 and not runs["half_finished"]
    _close(runs["resumed4"], runs["mesh4"], exact=True)
    _close(runs["resumed2"], runs["mesh4"])


def test_mesh_argument_is_validated():
    from jaxprobe.probe import probe_frames

    rng = np.random.default_rng(0)
    d = probe_frames({"a": [rng.standard_normal((8, 3)).astype(np.float32)]},
                     [rng.standard_normal((8, 8)).astype(np.float32)], {"a": 1})
    with pytest.raises(ValueError, match=r"'mesh' parameter of train_probes: .*int in \[1,"):
        train_probes(d, key=jax.random.key(0), config=TrainConfig(steps=1), probe=ProbeConfig(n_mels=8), mesh=0)
    with pytest.raises(ValueError, match="'mesh' parameter of train_probes"):
        train_probes(d, key=jax.random.key(0), config=TrainConfig(steps=1), probe=ProbeConfig(n_mels=8), mesh="gpu")
