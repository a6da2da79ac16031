#!/usr/bin/env bash
# The study (issue 15) on the GPU machine (one H200; ../../../shared/gpu/README.md says what it has),
# one chunk per device call (<= 10 min), through the project's own platform: `spelltransfer sweep
# chunk` starts a sweep controller and trainer workers on 127.0.0.1, continues the study from its
# state (results/study/state, or the newer one this machine already holds in $T/study/state), trains
# until its budget and writes the state back; it comes back as $OUT/state.tar.gz. README.md beside
# this file gives the whole sequence. Phases, there:
#   next [LIMIT]   THE command of every device call: takes the carried folder (if any), runs the setup
#                  once every piece is here, then a chunk for what is left of LIMIT (default 560) seconds
#   take           (carry .carry/N) copy the carried folder into $T/carry
#   setup          wheels into $T/site, the model and dataset into $T, gRPC stubs, a check
#   chunk [SECS]   one chunk of SECS seconds (default 500); $OUT/state.tar.gz, $OUT/logs.tar.gz, $OUT/chunk.log
# and here:
#   aside | back   move results/recipe/adapter's 39 MB weights into .git/ (they need not travel) and back
#   keep DIR       DIR/state.tar.gz (a run's files_at) into results/study/state, committed (only if newer)
#   status         the committed state's chunks and trial counts (no GPU work)
#   size           what a device call would send now (the tree, shared/, each .carry folder)
# Knobs: WORKERS (default 1 trainer worker), SLOTS (32), PACK (32: one packed process trains up to 32
# trials on one base model; PACK=1 SLOTS=1 WORKERS=4: one process per trial), MAX_CUTS (2),
# TARGET (COMPLETE trials this session aims at, default the spec's 64: a cold chunk asks no trials
# beyond them, so TARGET=32 runs the design alone; the chunk exits 3 once they are COMPLETE).
# For the dry run here (dryrun.sh): T (the machine's scratch, default /tmp), PY (python3), SITE
# (default $T/site; empty: none), SPEC, MODEL (the chunk's model folder instead of the GGUF's), DATA, EXTRA (more chunk args).
set -uo pipefail
T=${T:-/tmp}
PY=${PY:-python3}
SITE=${SITE-$T/site}
export PYTHONPATH=${PYTHONPATH_PRE:+$PYTHONPATH_PRE:}${SITE:+$SITE:}$PWD/shared HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SPELLTRANSFER_CACHE=$T/cache
M=$T/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
DATA=${DATA:-$T/d/recipe}
SPEC=${SPEC:-configs/sweeps/study.yaml}
S=$T/study
ASIDE=results/recipe/adapter/adapter_model.safetensors
model_path() {
  "$PY" -c "from spelltransfer.models.base_model import resolve_model_path; print(resolve_model_path('$M'))"
}
# The chunk serial a state folder's optuna.db holds (0: none); stdlib only.
serial() {
  "$PY" - "$1" <<'PY'
import json, sqlite3, sys, pathlib
db = pathlib.Path(sys.argv[1]) / "optuna.db"
try:
    rows = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute(
        "SELECT value_json FROM study_user_attributes WHERE key = 'chunk_serial'").fetchall()
    print(max(int(json.loads(v)) for (v,) in rows) if rows else 0)
except Exception:
    print(0)
PY
}
pieces_missing() {  # the files of prepare.sh's manifest not yet in $T/carry
  [ -f $T/carry/manifest.txt ] || { echo "manifest.txt"; return; }
  while read -r name _; do [ -e "$T/carry/$name" ] || echo "$name"; done < $T/carry/manifest.txt
}
phase=${1:?phase: next [LIMIT] | take | setup | chunk [SECS] | aside | back | keep DIR | status | size}
case $phase in
next)
  start=$(date +%s); limit=${2:-560}
  if [ ! -e $T/setup.done ]; then
    if compgen -G ".carry/*/*" > /dev/null; then bash "$0" take || exit 1; fi
    missing=$(pieces_missing)
    if [ -n "$missing" ]; then echo "setup waits for the other pieces"; exit 0; fi
    bash "$0" setup || exit 1
  fi
  left=$(( limit - ($(date +%s) - start) ))
  [ "$left" -ge 150 ] || { echo "only ${left}s left in this call: no chunk"; exit 0; }
  bash "$0" chunk "$left" ;;
take)
  mkdir -p $T/carry && for d in .carry/*/; do cp "$d"* $T/carry/ || exit 1; done
  du -sh $T/carry; missing=$(pieces_missing)
  echo "take: ${missing:+$(echo "$missing" | wc -l) files still to come: }$(echo ${missing:-every piece is here} | cut -c1-200)" ;;
setup)
  [ -z "$(pieces_missing)" ] || { echo "setup: pieces missing: $(echo $(pieces_missing))"; exit 1; }
  cd $T/carry || exit 1
  for first in *.part00; do [ -e "$first" ] && cat "${first%.part00}".part?? > "${first%.part00}"; done
  cd - > /dev/null
  if [ -n "$SITE" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE $T/carry/*.whl || exit 1
  fi
  mkdir -p $T/gguf $T/d && mv $T/carry/model.gguf $M
  [ "$(sha256sum $M | cut -c1-16)" = "$(cat $T/carry/model.sha256-prefix)" ] || { echo "model checksum differs"; exit 1; }
  tar -C $T/d -xzf $T/carry/data.tar.gz && ls $T/d/recipe || exit 1
  "$PY" -c "
import optuna, sqlalchemy, alembic, grpc, grpc_tools, google.protobuf as pb
import spelltransfer.platform.protos, spelltransfer.sweep.chunk, spelltransfer.sweep.local, spelltransfer.platform.worker
import spelltransfer.cli, spelltransfer.train.packed.job, pydantic, trl, datasets, gguf
print('optuna', optuna.__version__, 'sqlalchemy', sqlalchemy.__version__, 'grpc', grpc.__version__, 'protobuf', pb.__version__)" || exit 1
  model_path || exit 1
  touch $T/setup.done
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null; echo "setup done" ;;
chunk)
  secs=${2:-500}
  model=${MODEL:-$(model_path)} || exit 1
  mkdir -p $S
  # While this machine is held, its own state is the newest (the tree's is the one committed from an
  # earlier call, or older): a chunk continues from it, warm, even if the last state was not unpacked.
  here=$(serial $S/state); tree=$(serial results/study/state)
  if [ -d $S/state ] && [ "$here" -ge "$tree" ]; then
    echo "state: this machine's (chunk $here; the tree's: $tree)"
  else
    rm -rf $S/state
    if [ -d results/study/state ]; then cp -r results/study/state $S/state; fi
    echo "state: the tree's (chunk $tree)"
  fi
  # The work folder stays in $T: the next chunk on this same machine (while it is held) re-attaches
  # to the trials in flight and resumes them from their checkpoints instead of running them again.
  timeout --kill-after=10 $((secs + 20)) "$PY" -m spelltransfer.cli sweep chunk "$SPEC" --state $S/state \
    --work-dir $S/work --budget-s "$secs" --margin-s 45 --workers "${WORKERS:-1}" --slots "${SLOTS:-32}" \
    --pack-size "${PACK:-32}" --max-cuts "${MAX_CUTS:-2}" ${TARGET:+--target $TARGET} --no-tracking \
    --set training.data_dir=$DATA --set model.name=$model ${EXTRA:-} 2>&1 | tee $S/chunk.log
  rc=${PIPESTATUS[0]}
  echo "chunk exit $rc (0: ran, 3: the study has its COMPLETE trials)"
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
  mkdir -p $OUT && cp $S/chunk.log $OUT/chunk.log
  [ ! -d $S/state ] || tar -C $S -czf $OUT/state.tar.gz state
  [ ! -d $S/work/platform ] || (cd $S/work/platform && tar -czf $OUT/logs.tar.gz logs \
    $(ls worker*/runs/*/*.log worker*/packs/*/pack.log 2>/dev/null | tail -n 60))
  ls -la $OUT; exit $rc ;;
aside)
  g=$(git rev-parse --git-common-dir)/study-aside
  if [ -f $ASIDE ]; then mkdir -p $g && mv $ASIDE $g/ && echo "moved $ASIDE into $g/"; fi
  bash "$0" size ;;
back)
  g=$(git rev-parse --git-common-dir)/study-aside
  if [ -f $g/$(basename $ASIDE) ]; then mv $g/$(basename $ASIDE) $ASIDE && echo "restored $ASIDE"; fi
  git status --short results/recipe ;;
keep)
  dir=${2:?keep DIR: the files_at of the run}
  [ -f "$dir/state.tar.gz" ] || { echo "no $dir/state.tar.gz"; exit 1; }
  new=$(mktemp -d) && tar -C "$new" -xzf "$dir/state.tar.gz" || exit 1
  was=$(serial results/study/state); got=$(serial "$new/state")
  if [ "$got" -lt "$was" ]; then echo "$dir holds chunk $got, older than the tree's $was: not kept"; exit 1; fi
  rm -rf results/study/state && mv "$new/state" results/study/state && rm -rf "$new"
  bash "$0" status
  git add results/study/state
  git diff --cached --quiet -- results/study/state && { echo "nothing new to commit"; exit 0; }
  git commit -q -m "study: state after chunk $got" -- results/study/state && git log --oneline -1 ;;
status)
  "$PY" - <<'PY'
import csv, collections, json, pathlib
state = pathlib.Path("results/study/state")
for line in (state / "chunks.jsonl").read_text().splitlines() if (state / "chunks.jsonl").exists() else []:
    c = json.loads(line)
    print(f"chunk {c['serial']} {'warm' if c['warm'] else 'cold'} {c['seconds']:.0f}s ({c['stop']}): "
          f"{c['complete_before']} -> {c['complete_after']}/{c['target']} COMPLETE, cut {c['cut']}")
rows = list(csv.DictReader((state / "trials.csv").open())) if (state / "trials.csv").exists() else []
print(dict(collections.Counter(r["state"] for r in rows)))
# The step time of the latest chunk's trials (a pack's members share it): what decides which trials fit.
for r in [r for r in rows if r.get("curve")][-4:]:
    steps = [c for c in csv.DictReader((state / r["curve"]).open()) if c["event"] == "step" and c["time"]]
    if len(steps) > 1:
        a, b = steps[max(0, len(steps) - 50)], steps[-1]
        rate = (float(b["time"]) - float(a["time"])) / max(1, int(b["step"]) - int(a["step"]))
        print(f"trial {r['number']} ({r['state']}, {r['stop_reason']}): step {b['step']}/{r['max_steps']}, "
              f"{rate:.3f} s/step lately, {r['train_s']} s training")
PY
;;
size)
  # What a call sends: tracked files present, untracked ones git does not ignore, shared/ whole, the carry.
  tree=$(( $(git ls-files -z | xargs -0 du -cb 2>/dev/null | awk 'END {print $1}') \
         + $(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | awk 'END {print $1 + 0}') \
         + $(du -sb shared | cut -f1) - $(git ls-files -z shared | xargs -0 du -cb 2>/dev/null | awk 'END {print $1}') ))
  echo "the tree sends $tree bytes; a call sends at most 67108864"
  for d in .carry/*/; do [ -d "$d" ] && s=$(du -sb "$d" | cut -f1) && \
    echo "  carry $d: $s -> $((tree + s)) $([ $((tree + s)) -le 67108864 ] && echo fits || echo 'DOES NOT FIT')"; done
  [ ! -f $ASIDE ] || echo "  ($ASIDE is in the tree: 'bash results/study/gpu.sh aside' before the device calls)" ;;
*) echo "unknown phase $phase"; exit 2 ;;
esac
