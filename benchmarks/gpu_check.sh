#!/usr/bin/env bash
# The GPU measurements, as one prepared run on a GPU machine where the project's own venv does
# not exist: its python3 has torch (and pytest), and the wheels that it lacks travel in .whl/:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     -d .whl pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
#     typing-inspection==0.4.5 typing_extensions==4.16.0 byzfl==0.0.11
# It runs the aggregation tests on the GPU (those marked for CUDA run there), the ByzFL comparison
# and the engine-overhead benchmark, and writes every table and JSON into OUTDIR.
#
#   bash benchmarks/gpu_check.sh OUTDIR            # the full run (about 5 minutes on an H200)
#   QUICK=1 DEVICE=cpu bash benchmarks/gpu_check.sh /tmp/x   # a dry run of the same commands
set -u
out=${1:?usage: gpu_check.sh OUTDIR}
device=${DEVICE:-cuda}
mkdir -p "$out"
if [ "$device" = cuda ] && compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
if [ -n "${QUICK:-}" ]; then
  bz=(--d 20000 --rules mean,krum,geometric_median --reps 2)
  eo=(--nodes 10 --models logistic --reps 2)
else
  bz=(--reps 5 --slow 20)
  eo=(--nodes 10,100,1000 --models logistic,mlp,cnn --reps 3)
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$out/gpu.txt"
timeout 150 "$py" -m pytest -p no:cacheprovider -x tests/test_rules_coordinate.py tests/test_attacks.py \
  tests/test_rules_distance.py tests/test_preaggregators.py 2>&1 | tail -25 | tee "$out/tests_$device.txt"
timeout 270 "$py" benchmarks/byzfl_compare.py --device "$device" "${bz[@]}" \
  --out "$out/byzfl_compare_$device.json" 2>&1 | tee "$out/byzfl_compare_$device.txt"
timeout 240 "$py" benchmarks/engine_overhead.py --device "$device" "${eo[@]}" \
  --strategies vmap,chunked,loop/w1 --out "$out/engine_overhead_$device.json" 2>&1 \
  | tee "$out/engine_overhead_$device.txt"
