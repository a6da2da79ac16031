#!/usr/bin/env bash
# The study (issue 15) on the GPU machine (one H200; ../../../shared/gpu/README.md says what it has),
# one chunk per device call (<= 10 min), through the project's own platform: `spelltransfer sweep
# chunk` starts a sweep controller and trainer workers on 127.0.0.1, continues the study from its
# committed state (results/study/state: the Optuna storage, trials.csv, curves), trains until its
# budget and writes the state back; this script returns it as $OUT/state.tar.gz. README.md beside
# this file gives the whole sequence. Phases:
#   take           (carry .carry/N) copy the carried folder into /tmp/carry; once per folder of prepare.sh
#   setup          wheels into /tmp/site, the model and dataset into /tmp, gRPC stubs, a check
#   chunk [SECS]   one chunk of SECS seconds (default 500); $OUT/state.tar.gz, $OUT/logs.tar.gz, $OUT/chunk.log
#   status         the committed state's chunks and trial counts (no GPU work)
# Knobs: WORKERS (default 4 trainer processes sharing the GPU), SLOTS (1), PACK (1), MAX_CUTS (2).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD/shared HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SPELLTRANSFER_CACHE=/tmp/cache
M=/tmp/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
DATA=/tmp/d/recipe
S=/tmp/study
model_path() { python3 -c "from spelltransfer.models.base_model import resolve_model_path; print(resolve_model_path('$M'))"; }
phase=${1:?phase: take | setup | chunk [SECS] | status}
case $phase in
take)
  mkdir -p /tmp/carry && cp -v .carry/*/* /tmp/carry/ && du -sh /tmp/carry ;;
setup)
  cd /tmp/carry || exit 1
  for first in *.part00; do [ -e "$first" ] && cat "${first%.part00}".part?? > "${first%.part00}" && rm "${first%.part00}".part??; done
  cd - > /dev/null
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/carry/*.whl || exit 1
  mkdir -p /tmp/gguf /tmp/d && mv /tmp/carry/model.gguf $M 2>/dev/null
  [ "$(sha256sum $M | cut -c1-16)" = "$(cat /tmp/carry/model.sha256-prefix)" ] || { echo "model checksum differs"; exit 1; }
  tar -C /tmp/d -xzf /tmp/carry/data.tar.gz && ls $DATA
  python3 -c "import optuna, sqlalchemy, grpc, grpc_tools; import spelltransfer.platform.protos; print('optuna', optuna.__version__, 'grpc', grpc.__version__)" || exit 1
  model_path && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv ;;
chunk)
  secs=${2:-500}
  model=$(model_path) || exit 1
  rm -rf $S/state && mkdir -p $S
  [ -d results/study/state ] && cp -r results/study/state $S/state
  # The work folder stays in /tmp: the next chunk on this same machine (while it is held) re-attaches
  # to the trials in flight and resumes them from their checkpoints instead of running them again.
  timeout $((secs + 60)) python3 -m spelltransfer.cli sweep chunk configs/sweeps/study.yaml --state $S/state \
    --work-dir $S/work --budget-s "$secs" --workers "${WORKERS:-4}" --slots "${SLOTS:-1}" --pack-size "${PACK:-1}" \
    --max-cuts "${MAX_CUTS:-2}" --no-tracking --set training.data_dir=$DATA --set model.name=$model 2>&1 | tee $S/chunk.log
  echo "chunk exit ${PIPESTATUS[0]} (0: ran, 3: the study has its COMPLETE trials)"
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  mkdir -p $OUT && cp $S/chunk.log $OUT/chunk.log
  tar -C $S -czf $OUT/state.tar.gz state && ls -la $OUT
  (cd $S/work/platform && tar -czf $OUT/logs.tar.gz logs $(ls worker*/runs/*.log 2>/dev/null | tail -n 40)) ;;
status)
  python3 - <<'PY'
import csv, collections, json, pathlib
state = pathlib.Path("results/study/state")
for line in (state / "chunks.jsonl").read_text().splitlines() if (state / "chunks.jsonl").exists() else []:
    c = json.loads(line)
    print(f"chunk {c['serial']} {'warm' if c['warm'] else 'cold'} {c['seconds']:.0f}s ({c['stop']}): "
          f"{c['complete_before']} -> {c['complete_after']}/{c['target']} COMPLETE, cut {c['cut']}")
rows = list(csv.DictReader((state / "trials.csv").open())) if (state / "trials.csv").exists() else []
print(dict(collections.Counter(r["state"] for r in rows)))
PY
;;
*) echo "unknown phase $phase"; exit 2 ;;
esac
