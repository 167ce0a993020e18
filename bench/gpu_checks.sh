#!/usr/bin/env bash
# GPU checks and figures, run in one go on a lent GPU machine (see docs/benchmarks.md):
#   1. the fmnist-fast recipe on CUDA alone (time to 90-94 %),
#   2. the Fashion-MNIST sweep (bench/sweeps/fmnist.json), every entry in parallel,
#   3. the core training and resume tests with CUDA visible.
# Needs: torch, timm, safetensors, pillow, tqdm, pytest; Fashion-MNIST IDX files under $OCULA_DATA.
set -u
OUT=${OUT:-/tmp/ocula-gpu}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OCULA_DATA=${OCULA_DATA:-$PWD/.devdata}
PY=${PY:-python3}
SWEEP_LIMIT=${SWEEP_LIMIT:-330}
SWEEP=${SWEEP:-bench/sweeps/fmnist.json}
STEPS=${STEPS:-"recipe sweep pytest"}  # any of them
{ nvidia-smi -L; $PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"; nproc; } > "$OUT/gpu.txt" 2>&1
[[ $STEPS == *recipe* ]] && timeout 90 $PY bench/fmnist_time_to_accuracy.py --which recipe --json "$OUT/gpu_fmnist_recipe.json" > "$OUT/gpu_recipe.log" 2>&1
[[ $STEPS == *recipe* ]] && echo "recipe rc=$?" >> "$OUT/gpu.txt"
# Many small processes share the GPU far better under MPS; fall back to time-slicing without it.
if nvidia-cuda-mps-control -d 2>>"$OUT/gpu.txt"; then
  if timeout 60 $PY -c "import torch; torch.ones(1).cuda().sum().item()" >>"$OUT/gpu.txt" 2>&1; then echo "mps on" >> "$OUT/gpu.txt"
  else echo quit | nvidia-cuda-mps-control; echo "mps failed, off" >> "$OUT/gpu.txt"; fi
fi
work=/tmp/ocula-sweep; mkdir -p $work
[[ $STEPS == *sweep* ]] && for name in $($PY bench/sweep.py $SWEEP --list); do
  OMP_NUM_THREADS=1 timeout $SWEEP_LIMIT $PY bench/sweep.py $SWEEP "$name" --out $work \
    > "$work/$name.log" 2>&1 &
done
[[ $STEPS == *pytest* ]] && timeout 240 $PY -m pytest -q -x -p no:cacheprovider tests/test_core_train.py tests/test_core_resume.py \
  > "$OUT/pytest_gpu.log" 2>&1
[[ $STEPS == *pytest* ]] && echo "pytest rc=$?" >> "$OUT/gpu.txt"
wait
tar czf "$OUT/sweep.tgz" -C $work .
