"""A small dump run for the kill/resume tests: `python _dump_worker.py OUT SHARD [KILL_AT]`.

Prints "ready" once imports are done. With KILL_AT=n it SIGKILLs itself just before the
n-th file write of the store (a kill in the middle of a chunk commit)."""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import torch
from torch import nn

from torch_bridge.dump import Item, dump
from torch_bridge.store import writer as store_writer

LAYERS = ["body.0", "body.2", "head"]
N_SAMPLES = 400


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 3, 3, padding=1))
        self.head = nn.Linear(20, 6)

    def forward(self, wave):  # (B, S) -> [B, 1, T=20, F=20]
        x = wave.reshape(wave.shape[0], 1, 20, 20)
        y = self.body(x)
        return self.head(y)


def make_model():
    torch.manual_seed(0)
    return Toy().eval()


def items():
    conds = [{"noise": "clean", "snr": None}, {"noise": "pink", "snr": 0}, {"noise": "pink", "snr": 10}]
    return [Item(c, f"u{u}", w) for c in conds for u in range(4) for w in range(2)]


def load(item, delay=0.0):
    if delay:
        time.sleep(delay)
    snr = item.condition["snr"]
    seed = [int(item.utterance[1:]), item.window, -1 if snr is None else int(snr)]
    x = np.random.default_rng([s + 100 for s in seed]).standard_normal(N_SAMPLES).astype(np.float32)
    return x, {"rms": float(np.sqrt(np.mean(x**2)))}


def run(out, shard="0/1", *, delay=0.0, progress=False, log=None):
    return dump(make_model(), LAYERS, items(), lambda it: load(it, delay), out, batch_size=1,
                chunk_size=2, shard=shard, threads=1, progress=progress,
                model_info={"name": "toy"}, mixing={"seed": 0}, log=log)


def _kill_before_write(n):
    count = {"n": 0}

    def wrap(fn):
        def inner(*a, **k):
            count["n"] += 1
            if count["n"] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **k)
        return inner

    store_writer.save_npy = wrap(store_writer.save_npy)  # the writer's every file write goes through these two
    store_writer.save_json = wrap(store_writer.save_json)


if __name__ == "__main__":
    out, shard = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:
        _kill_before_write(int(sys.argv[3]))
    print("ready", flush=True)
    rep = run(out, shard, delay=float(os.environ.get("DUMP_WORKER_DELAY", "0.02")))
    print(f"wrote {rep.chunks_written}", flush=True)
    print("done", flush=True)
