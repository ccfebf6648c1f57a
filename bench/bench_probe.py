"""Probe training throughput: all layers of one model in one jitted, vmapped step (jaxprobe) vs a
PyTorch loop that trains the same probes one layer after another, on the same data in the same run.

Workload: 8 layers of width 256 at downsampling rates 1, 1, 2, 2, 4, 4, 8, 8 (a pure-LSTM-like
model), the paper's probe (linear to 80*r, 4 Highway layers, linear out), Adam, L1 loss, 128 blocks
of 8 mel frames (1024 mel frames) per layer per step. Throughput counts mel frames x layers per
second. jaxprobe's all-layer step is timed in both layouts (TrainConfig.fuse: "vmap", batched matmuls
over stacked parameters; "unroll", one matmul chain per layer in the same XLA program; the default
"auto" picks unroll on CPU), and its single-layer step run one layer after another as a third contender. Before timing, both sides start from the same parameters, see the same mini-batches for 20
steps, and must end with the same per-layer losses (the check is printed and stored).

    python bench/bench_probe.py [--steps 30] [--repeat 4]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import peak_rss_mb, timeit, write_results  # noqa: E402

RATES = (1, 1, 2, 2, 4, 4, 8, 8)
HIDDEN = 256
N_MELS = 80
BATCH_BLOCKS = 128
N_BLOCKS = 2000


def _data(seed=0):
    import jax

    from jaxprobe.probe import probe_frames

    rng = np.random.default_rng(seed)
    names = [f"layer{i}" for i in range(len(RATES))]
    block = max(RATES)
    T = N_BLOCKS * block
    mel = rng.standard_normal((T, N_MELS)).astype(np.float32)
    acts = {n: [rng.standard_normal((T // r, HIDDEN)).astype(np.float32)] for n, r in zip(names, RATES)}
    del jax
    return probe_frames(acts, [mel], dict(zip(names, RATES)))


class _TorchProbe:
    """The same probe in torch, parameters copied from a jaxprobe probe."""

    def __init__(self, params, rate, torch):
        self.torch, self.rate = torch, rate

        def lin(p):
            layer = torch.nn.Linear(p["kernel"].shape[0], p["kernel"].shape[1])
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(np.asarray(p["kernel"]).T.copy()))
                layer.bias.copy_(torch.from_numpy(np.asarray(p["bias"]).copy()))
            return layer

        self.up = lin(params["up"]["dense"])
        self.hw = [(lin(params["body"][f"highway_{i}"]["transform"]), lin(params["body"][f"highway_{i}"]["gate"]))
                   for i in range(4)]
        self.out = lin(params["body"]["out"])
        self.modules = torch.nn.ModuleList([self.up, self.out] + [m for pair in self.hw for m in pair])

    def __call__(self, h):  # (B, block//r, H) -> (B*block, 80)
        torch = self.torch
        x = self.up(h).reshape(-1, N_MELS)
        for tr, g in self.hw:
            gate = torch.sigmoid(g(x))
            x = gate * torch.relu(tr(x)) + (1 - gate) * x
        return self.out(x)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="optimiser steps per timed run")
    ap.add_argument("--repeat", type=int, default=4, help="interleaved timing rounds")
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import torch

    from jaxprobe.probe import ProbeConfig, TrainConfig, default_optimizer
    from jaxprobe.probe.step import resolve_fuse, unstack_params
    from jaxprobe.probe.train import Trainer

    data = _data()
    cfg = TrainConfig(steps=10**6, batch_blocks=BATCH_BLOCKS, learning_rate=1e-3, warmup_steps=0,
                      schedule="constant")
    probe = ProbeConfig()
    key = jax.random.key(0)
    import dataclasses

    tr = Trainer(data, None, dataclasses.replace(cfg, fuse="vmap"), probe, default_optimizer(cfg), key)

    tr_unroll = Trainer(data, None, dataclasses.replace(cfg, fuse="unroll"), probe, default_optimizer(cfg), key)
    state0 = tr.init_state()
    jax.block_until_ready(state0)
    per_layer0 = unstack_params(state0["params"], tr.lay, data.names)
    batch_key = jax.random.fold_in(key, 1)

    def batch_idx(step):
        return np.asarray(jax.random.randint(jax.random.fold_in(batch_key, step), (BATCH_BLOCKS,), 0, data.n_blocks))

    xs_t = [torch.from_numpy(np.array(x)) for x in data.inputs]
    y_t = torch.from_numpy(np.array(data.target))

    def torch_train(n_steps, probes=None, record=False):
        """One layer after another, each for n_steps (the baseline loop)."""
        probes = probes or [_TorchProbe(per_layer0[n], r, torch) for n, r in zip(data.names, data.rates)]
        idx = [torch.from_numpy(batch_idx(s).copy()) for s in range(n_steps)] if record else None
        losses = []
        for i, p in enumerate(probes):
            opt = torch.optim.Adam(p.modules.parameters(), lr=cfg.learning_rate)
            for s in range(n_steps):
                b = idx[s] if record else torch.randint(0, data.n_blocks, (BATCH_BLOCKS,))
                loss = torch.mean(torch.abs(p(xs_t[i][b]) - y_t[b].reshape(-1, N_MELS)))
                opt.zero_grad()
                loss.backward()
                opt.step()
            losses.append(float(loss.detach()))
        return losses, probes

    # ---- torch thread count: the faster of 1 and 2 on this (shared) machine
    speed = {}
    for th in (1, 2):
        torch.set_num_threads(th)
        p1 = [_TorchProbe(per_layer0[data.names[0]], data.rates[0], torch)]
        torch_train(2, p1)
        t0 = time.perf_counter()
        torch_train(3, p1)
        speed[th] = time.perf_counter() - t0
    threads = min(speed, key=speed.get)
    torch.set_num_threads(threads)
    print(f"torch seconds per 3 single-layer steps by thread count: {speed}; using {threads}")

    # ---- correctness: same init, same batches, 20 steps -> same per-layer losses and parameters
    check_steps = 20
    st = tr.run(jax.tree.map(jnp.copy, state0), check_steps)
    jax_losses = np.asarray(st["last"])[np.argsort(tr.lay.order)]  # body order -> data order
    t_losses, t_probes = torch_train(check_steps, record=True)
    loss_rel = float(np.max(np.abs(jax_losses - np.array(t_losses)) / np.array(t_losses)))
    jp = unstack_params(st["params"], tr.lay, data.names)
    w_err = max(float(np.max(np.abs(np.asarray(jp[n]["body"]["out"]["kernel"]).T
                                    - t_probes[i].out.weight.detach().numpy())))
                for i, n in enumerate(data.names))
    print(f"check after {check_steps} steps: max relative loss difference jax vs torch {loss_rel:.2e}, "
          f"max |out kernel difference| {w_err:.2e}")
    ok = loss_rel < 1e-3 and w_err < 1e-3

    # ---- timing
    n = args.steps
    t0 = time.perf_counter()
    s = tr.run(state0, n)
    jax.block_until_ready(s)
    jax_first = time.perf_counter() - t0  # compile + one run

    def jax_run():
        jax.block_until_ready(tr.run(state0, n))

    jax.block_until_ready(tr_unroll.run(state0, n))  # compile
    su = tr_unroll.run(jax.tree.map(jnp.copy, state0), check_steps)
    unroll_diff = float(np.max(np.abs(np.asarray(su["last"]) - np.asarray(st["last"])) / np.asarray(st["last"])))
    print(f"unrolled vs vmapped step: max relative loss difference after {check_steps} steps {unroll_diff:.2e}")
    ok = ok and unroll_diff < 1e-4

    def jax_unroll_run():
        jax.block_until_ready(tr_unroll.run(state0, n))

    # jaxprobe's own step, but one layer after another (isolates what the all-layer step buys)
    solo = [Trainer(data.subset([nm]), None, cfg, probe, default_optimizer(cfg), key) for nm in data.names]
    solo_states = [t.init_state() for t in solo]
    for t, s0 in zip(solo, solo_states):  # compile each distinct (rate, width) once
        jax.block_until_ready(t.run(s0, n))

    def jax_solo_run():
        for t, s0 in zip(solo, solo_states):
            jax.block_until_ready(t.run(s0, n))

    probes = [_TorchProbe(per_layer0[nm], r, torch) for nm, r in zip(data.names, data.rates)]

    # interleaved rounds: the machine is shared, so each contender is timed in every round, best kept
    times = {"jax": [], "jax_unroll": [], "jax_solo": [], "torch": []}
    for _ in range(args.repeat):
        times["jax"].append(timeit(jax_run, repeat=1))
        times["jax_unroll"].append(timeit(jax_unroll_run, repeat=1))
        times["jax_solo"].append(timeit(jax_solo_run, repeat=1))
        times["torch"].append(timeit(lambda: torch_train(n, probes), repeat=1))
    jax_steady, jax_unroll, jax_solo, torch_steady = (min(times[k]) for k in ("jax", "jax_unroll", "jax_solo", "torch"))
    frames = n * BATCH_BLOCKS * data.block * len(RATES)
    res = {
        "workload": {"layers": len(RATES), "hidden": HIDDEN, "rates": list(RATES), "n_mels": N_MELS,
                     "probe": "linear->80r, 4 Highway(80), linear(80->80)", "optimizer": "Adam 1e-3",
                     "mel_frames_per_layer_per_step": BATCH_BLOCKS * data.block, "steps_per_run": n,
                     "train_blocks": data.n_blocks},
        "jax_vmapped": {"compile_plus_first_run_s": jax_first, "steady_s": jax_steady,
                        "layer_frames_per_s": frames / jax_steady,
                        "compile_s_estimate": max(jax_first - jax_steady, 0.0)},
        "jax_unrolled": {"steady_s": jax_unroll, "layer_frames_per_s": frames / jax_unroll,
                         "max_rel_loss_diff_vs_vmapped": unroll_diff},
        "jax_layer_loop": {"steady_s": jax_solo, "layer_frames_per_s": frames / jax_solo},
        "vmap_gain": jax_solo / jax_steady,
        "unroll_gain": jax_solo / jax_unroll,
        "default_fuse_on_this_backend": resolve_fuse("auto"),
        "speedup_vmapped": torch_steady / jax_steady,
        "speedup_unrolled": torch_steady / jax_unroll,
        "torch_layer_loop": {"steady_s": torch_steady, "layer_frames_per_s": frames / torch_steady,
                             "torch": torch.__version__, "threads": threads,
                             "thread_trial_s": {str(k): v for k, v in speed.items()}},
        "speedup": torch_steady / (jax_unroll if resolve_fuse("auto") == "unroll" else jax_steady),
        "check": {"steps": check_steps, "max_rel_loss_diff": loss_rel, "max_abs_out_kernel_diff": w_err,
                  "passed": ok},
        "round_times_s": times,
        "peak_rss_mb": peak_rss_mb(),
        "load_average_at_end": list(os.getloadavg()),
    }
    print(f"jax vmapped: {frames / jax_steady:,.0f} layer-frames/s (steady {jax_steady:.3f} s, "
          f"compile+first {jax_first:.2f} s); torch loop: {frames / torch_steady:,.0f} layer-frames/s "
          f"({torch_steady:.3f} s); speedup {torch_steady / jax_steady:.2f}x; jaxprobe one layer at a time "
          f"{frames / jax_solo:,.0f} layer-frames/s (vmap gain {jax_solo / jax_steady:.2f}x); jax unrolled "
          f"{frames / jax_unroll:,.0f} layer-frames/s (speedup {torch_steady / jax_unroll:.2f}x); "
          f"headline (default fuse={resolve_fuse('auto')}): {res['speedup']:.2f}x")
    out = write_results("probe", res)
    print(f"wrote {out}")
    if not ok:
        raise SystemExit("the jax and torch probes disagree; timing is not meaningful")


if __name__ == "__main__":
    main()
