"""What verifying the activation store costs, per GB, against reading the data.

Builds a store with MUSE's layout (24 layers of (16,128), (32,64), (48,32) float32 per item,
16 items per chunk, so ~128 kB per file), then times, best of --repeat, with the files in the
page cache (warm) and evicted from it (cold, ``posix_fadvise(DONTNEED)``):

* ``read``          the baseline: every chunk file read into memory (``np.load``)
* ``hash``          xxh3_64 of every chunk file (what the store checks on first read)
* ``verify``        ``jaxprobe store verify`` (hash + meta.json seals + bookkeeping)
* ``read_verified`` the analysis' read path (``store.read`` of every layer) with the
  first-read verification, against the same path with it skipped (``read_unverified``)
* ``content_key``   the digest that keys cached results (reads only meta.json files)
* ``commit_hash``   the hashing share of ``write_chunk``

plus the raw speed of candidate checksums on one 64 MB buffer (xxh3_64, xxh3_128, CRC32C when
``google-crc32c`` / ``crc32c`` are importable, zlib's CRC32, sha256, a memcpy). Prints the
ratios and the extrapolation to the paper-scale store (6.5 GiB) against the measured paper-
scale analysis time in bench/results/sweep.json. Writes bench/results/store.json.

    python bench/bench_store.py [--gb 0.5] [--repeat 3] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import xxhash

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._common import RESULTS, peak_rss_mb, timeit, write_results  # noqa: E402

SHAPES = [(16, 128)] * 8 + [(32, 64)] * 4 + [(48, 32)] * 4 + [(32, 64)] * 4 + [(16, 128)] * 4
PAPER_GIB = 6.475  # bench/results/sweep.json: 24 layers x 18 noises x 41 SNRs x 50 utterances


def _build(path: Path, gb: float, chunk_size: int):
    from torch_bridge.dump import Item
    from torch_bridge.store import Plan, StoreWriter

    per_item = sum(4 * c * f for c, f in SHAPES)
    n = max(chunk_size, int(gb * 1e9 / per_item) // chunk_size * chunk_size)
    items = [Item({"noise": "n", "snr": float(i % 41)}, f"u{i // 41}", 0) for i in range(n)]
    layers = [{"name": f"layer{j:02d}", "shape": list(s)} for j, s in enumerate(SHAPES)]
    w = StoreWriter(path, plan=Plan.from_items(items), layers=layers, chunk_size=chunk_size, durable=False)
    rng = np.random.default_rng(0)
    t_write = 0.0
    for k in w.shard_chunks():
        arrays = {e["name"]: rng.standard_normal((chunk_size, *e["shape"]), dtype=np.float32) for e in layers}
        t0 = time.perf_counter()
        w.write_chunk(k, arrays)
        t_write += time.perf_counter() - t0
    return w, t_write


def _files(store):
    return [store.chunk_dir(k) / f"{layer}.npy" for k in store.done_chunks() for layer in store.layers]


def _evict(files):
    os.sync()  # dirty pages are not evicted: write them back first
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _algorithms(repeat: int) -> dict:
    buf = np.random.default_rng(1).standard_normal((64 << 20) // 4, dtype=np.float32)
    buf.flags.writeable = False
    mv = memoryview(buf).cast("B")
    raw = bytes(mv)  # google-crc32c takes read-only bytes only
    cands = {
        "memcpy (baseline)": lambda: np.array(buf, copy=True),
        "xxh3_64": lambda: xxhash.xxh3_64_hexdigest(mv),
        "xxh3_128": lambda: xxhash.xxh3_128_hexdigest(mv),
        "zlib.crc32": lambda: zlib.crc32(mv),
        "sha256": lambda: hashlib.sha256(mv).hexdigest(),
    }
    try:
        import google_crc32c

        cands[f"google_crc32c ({google_crc32c.implementation})"] = lambda: google_crc32c.value(raw)
    except ImportError:
        pass
    try:
        import crc32c

        cands["crc32c"] = lambda: crc32c.crc32c(mv)
    except ImportError:
        pass
    return {name: len(mv) / 1e9 / timeit(fn, repeat=repeat) for name, fn in cands.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=0.5, help="store size in GB (default 0.5)")
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to build the store (default: the system temp folder)")
    args = ap.parse_args()
    from torch_bridge.store import file_digest, open_store, verify_store

    load0 = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    try:
        writer, t_write = _build(tmp / "store", args.gb, args.chunk_size)
        files = _files(writer)
        n_bytes = sum(f.stat().st_size for f in files)
        gb = n_bytes / 1e9

        def read():
            for f in files:
                np.load(f)

        def hash_all():
            for f in files:
                file_digest(f)

        def verify():
            check = verify_store(tmp / "store")
            assert check.ok and check.n_bytes == n_bytes

        def read_path(verified: bool):
            st = open_store(tmp / "store")
            if not verified:  # skip the first-read check: the same path without verification
                st._verified = {(k, layer) for k in st.done_chunks() for layer in st.layers}
            for layer in st.layers:
                st.read(layer)

        # the output is right: the recorded checksums are xxh3_64 of the files' bytes
        meta = open_store(tmp / "store").chunk_meta(0)
        assert meta["files"][files[0].name]["xxh3_64"] == xxhash.xxh3_64_hexdigest(files[0].read_bytes())
        read()  # warm the page cache
        warm = {
            "read": timeit(read, repeat=args.repeat),
            "hash": timeit(hash_all, repeat=args.repeat),
            "verify": timeit(verify, repeat=args.repeat),
            "read_unverified": timeit(lambda: read_path(False), repeat=args.repeat),
            "read_verified": timeit(lambda: read_path(True), repeat=args.repeat),
            "content_key": timeit(lambda: open_store(tmp / "store").content_key(), repeat=args.repeat),
        }
        t_commit_hash = timeit(hash_all, repeat=1)  # the files of a fresh commit are in the page cache
        cold = {}
        for name, fn in (("read", read), ("verify", verify)):
            best = float("inf")
            for _ in range(args.repeat):
                _evict(files)
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
            cold[name] = best
        algos = _algorithms(args.repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    per_gb = lambda d: {k: v / gb for k, v in d.items()}  # noqa: E731
    analysis_s = None
    try:
        import json

        analysis_s = json.loads((RESULTS / "sweep.json").read_text())["jaxprobe_s"]
    except (OSError, KeyError, ValueError):
        pass
    paper_gb = PAPER_GIB * 2**30 / 1e9
    result = {
        "store": {"gb": gb, "files": len(files), "chunk_size": args.chunk_size, "layers": len(SHAPES),
                  "bytes_per_file": n_bytes / len(files)},
        "warm_s": warm, "warm_s_per_gb": per_gb(warm), "cold_s": cold, "cold_s_per_gb": per_gb(cold),
        "write_s": t_write, "commit_hash_share_of_write": t_commit_hash / t_write,
        "ratios": {
            "hash / read (warm)": warm["hash"] / warm["read"],
            "verify / read (warm)": warm["verify"] / warm["read"],
            "read_verified / read_unverified (warm)": warm["read_verified"] / warm["read_unverified"],
            "verify / read (cold)": cold["verify"] / cold["read"],
        },
        "checksum_gb_per_s_64mb_buffer": algos,
        "paper_scale": {"gb": paper_gb, "verify_s_warm": warm["verify"] / gb * paper_gb,
                        "verify_s_cold": cold["verify"] / gb * paper_gb,
                        "analysis_s (bench/results/sweep.json)": analysis_s},
        "load_average_1min": {"start": load0, "end": os.getloadavg()[0]},
        "peak_rss_mb": peak_rss_mb(),
    }
    out = write_results("store", result)
    print(f"store: {gb:.2f} GB in {len(files)} files of {n_bytes / len(files) / 1e3:.0f} kB "
          f"(load {load0:.2f} -> {os.getloadavg()[0]:.2f})")
    for k in warm:
        print(f"  warm {k:16s} {warm[k]:7.3f} s  {warm[k] / gb:6.3f} s/GB")
    for k in cold:
        print(f"  cold {k:16s} {cold[k]:7.3f} s  {cold[k] / gb:6.3f} s/GB")
    for k, v in result["ratios"].items():
        print(f"  ratio {k:40s} {v:5.2f}")
    print(f"  hashing share of write_chunk: {result['commit_hash_share_of_write']:.1%}")
    print("  checksums on a 64 MB buffer (GB/s): " + ", ".join(f"{k} {v:.2f}" for k, v in algos.items()))
    ps = result["paper_scale"]
    print(f"  paper scale ({paper_gb:.2f} GB): verify ~{ps['verify_s_warm']:.1f} s warm, ~{ps['verify_s_cold']:.1f} s cold"
          + (f"; the analysis itself takes {analysis_s:.1f} s" if analysis_s else ""))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
