#!/bin/bash
# Issue 19, target 4: the GPU figures in one device call (about 5 minutes on an H100).
#
# Prepare once, here, in the repository root (the checkpoint and golden case are not committed,
# and ../shared does not travel to the device machine):
#     mkdir -p .gpu && cp ../shared/muse/g_best ../shared/muse/golden_case1.npz .gpu/
#     grep -qx '/.gpu/' .git/info/exclude || echo /.gpu/ >> .git/info/exclude
# then run, through the device tool, with carry [".gpu"] and timeout_s 540:
#     bash scripts/gpu_check.sh
# It writes bench/results/muse_gpu_<name>.json and seprobe_gpu_<name>.json under $OUT (the device
# tool brings them back) or, without $OUT, bench/results; copy them into bench/results and
# quote them with the device's name. It uses the machine's own python3 (torch, CUDA jax, scipy);
# it installs nothing.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
export JAXPROBE_BENCH_RESULTS=${OUT:-$PWD/bench/results}
mkdir -p "$JAXPROBE_BENCH_RESULTS"
PY=${PYTHON:-python3}
name=$($PY -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '_') if torch.cuda.is_available() else 'none')")
if [ "$name" = none ]; then echo "gpu_check: torch sees no GPU here; nothing measured." >&2; exit 1; fi
nvidia-smi | tee "$JAXPROBE_BENCH_RESULTS/nvidia-smi_$name.txt"
$PY -c "import jax; print('jax', jax.__version__, jax.devices())"
status=0
timeout 200 $PY bench/bench_gpu.py --muse .gpu --tag "gpu_$name" || status=1
timeout 300 $PY bench/bench_seprobe.py --torch-device cuda --tag "gpu_$name" || status=1
exit $status
