#!/usr/bin/env bash
# The GPU session of issue 7, in stages, one `device` call each (the machine keeps /tmp only while
# warm, and one call carries at most 64 MiB: wheels, then the two halves of the GGUF).
#   stage1  carry .whl .gpudata   : Unsloth/pydantic wheels -> /tmp/site, dataset -> /tmp/data;
#                                   fused_selfcheck.py (random 4-layer model: every packed mode vs eager HF path)
#   stage2  carry .gguf           : part00 -> /tmp/gguf
#   stage3  carry .gguf           : part01, the GGUF; train_throughput.py (graph check + hf vs packed
#                                   modes), then the 64-trial sweep until the call's time is used
#   sweep   [extra sweep_gpu args]: continue the sweep (--resume), e.g. --time-budget 500 --skip-hf
# Outputs land in $OUT (the device tool brings them back). .gpudata holds train/validation.jsonl
# of `spelltransfer data build --seed 0` (copied from results/demo/data).
set -uo pipefail
stage=${1:?stage1|stage2|stage3|sweep}
shift
export PYTHONPATH=/tmp/site:$PWD/shared HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export SPELLTRANSFER_CACHE=/tmp/stcache SPELLTRANSFER_SMOLLM2_GGUF=/tmp/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
OUT=${OUT:-/tmp/out}
started=$(date +%s)
quiet() { grep -v -E "Warning|warn\(|Loading weights|return Variable|grad.sizes|param.sizes"; }

case $stage in
stage1)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  mkdir -p /tmp/data /tmp/gguf && cp .gpudata/*.jsonl /tmp/data/ && wc -l /tmp/data/*.jsonl
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)"
  timeout 240 python3 benchmarks/fused_selfcheck.py 2>&1 | quiet | tee $OUT/selfcheck.log
  ;;
stage2)
  cp .gguf/part00 /tmp/gguf/ && ls -la /tmp/gguf
  ;;
stage3)
  [ -f /tmp/gguf/part00 ] || { echo "part00 missing: the machine was not kept"; exit 5; }
  cat /tmp/gguf/part00 .gguf/part01 > $SPELLTRANSFER_SMOLLM2_GGUF
  sha256sum $SPELLTRANSFER_SMOLLM2_GGUF | cut -c1-16
  python3 -m spelltransfer.models.base_model 2>&1 | tail -2
  timeout 400 python3 benchmarks/train_throughput.py --data /tmp/data --out $OUT --backends hf,packed \
    --batch-sizes 32,256 --no-length-grouped --packed-configs 64xgrid,64xgrid:compiled,64xgrid:nocompile \
    --steps 5 --warmup 2 --graph-check --timeout 330 2>&1 | quiet | tee $OUT/bench.log
  budget=$(( 555 - ($(date +%s) - started) - 45 ))
  echo "== sweep: time budget ${budget} s"
  if [ "$budget" -gt 60 ]; then
    python3 benchmarks/sweep_gpu.py --data /tmp/data --out $OUT --time-budget $budget --skip-hf \
      --state /tmp/sweep_state.pt --adapters /tmp/adapters --eval-per-task 200 "$@" 2>&1 | quiet | tee $OUT/sweep1.log
  fi
  ;;
diag)   # carry .whl2 (the small wheels) .gguf/part00: gradient check of every fused variant, then the
        # loss check with a learning rate large enough that a wrong backward shows
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl2/*.whl || exit 3
  mkdir -p /tmp/data /tmp/gguf && cp .gpudata/*.jsonl /tmp/data/ && cp .gguf/part00 /tmp/gguf/
  timeout 200 python3 benchmarks/fused_gradcheck.py --tokens 8192 2>&1 | quiet | tee $OUT/gradcheck.log
  timeout 150 python3 benchmarks/fused_selfcheck.py --lr 0.02 --modes compiled 2>&1 | quiet | tee $OUT/selfcheck.log
  ;;
realcheck)  # carry .gguf/part01: the real model, graph check (8 trials, 4 steps) and the 64-trial grid step
  cat /tmp/gguf/part00 .gguf/part01 > $SPELLTRANSFER_SMOLLM2_GGUF && sha256sum $SPELLTRANSFER_SMOLLM2_GGUF | cut -c1-16
  python3 -m spelltransfer.models.base_model 2>&1 | tail -1
  timeout 300 python3 benchmarks/train_throughput.py --data /tmp/data --out $OUT --backends packed \
    --packed-configs 64xgrid --steps 5 --warmup 2 --graph-check --timeout 280 "$@" 2>&1 | quiet | tee $OUT/bench.log
  ;;
sweep)
  python3 benchmarks/sweep_gpu.py --data /tmp/data --out $OUT --resume --state /tmp/sweep_state.pt \
    --adapters /tmp/adapters --eval-per-task 200 "$@" 2>&1 | quiet | tee $OUT/sweep_$(date +%H%M%S).log
  ;;
esac
echo "== stage $stage: $(( $(date +%s) - started )) s"
