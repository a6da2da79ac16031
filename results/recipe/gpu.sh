#!/usr/bin/env bash
# How results/recipe/ was made on the GPU machine (one H200; see ../shared/gpu/README.md).
# Each phase fits one device call (<= 10 min); state lives in /tmp while the machine is held, and
# every training resumes from its latest checkpoint (`spelltransfer train --resume`).
#   here:  ../shared/gpu/prepare-cli-wheels.sh; ../shared/gpu/prepare-model-halves.sh
#          round 4: pip download -q --no-deps -d .gpu english-words==2.0.2 (8 MB; its letter lists are
#          checked against the dictionaries at train time; setup2 installs .gpu/*.whl)
#          spelltransfer data build --out /tmp/d/recipe; tar -C /tmp/d -czf .gpu/data.tar.gz recipe/{train,validation,test}.jsonl recipe/{words,manifest}.json
#   there: bash results/recipe/gpu.sh setup1   (carry .whl .gguf/part00)
#          bash results/recipe/gpu.sh setup2   (carry .gguf/part01 .gpu)
#          bash results/recipe/gpu.sh train SECONDS
#          bash results/recipe/gpu.sh eval; bash results/recipe/gpu.sh export NAME
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD/shared HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SPELLTRANSFER_CACHE=/tmp/cache
M=/tmp/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
RUNS=/tmp/runs
# name -> overrides, per round: ROUND=1|2|3 bash gpu.sh ... redoes that round; no ROUND runs round 4.
# Round 1 (runs/spell, spellfirst_aux, format_aux): spelling-only training serves the direct and
# spell_first modes. Round 2 adds the bridge (tasks/spell_echo.py) and spell_marked (one-pass layout then).
ROUND=${ROUND:-4}
R1="--set training.max_steps=1500 --set training.batch_size=64 --set transfer.bridge_fraction=0.0"
if [ "$ROUND" = 1 ]; then
declare -A TRIALS=(
  [spell]="$R1 --set transfer.mode=direct --set transfer.aux_fraction=0.0"
  [spellfirst_aux]="$R1 --set transfer.mode=spell_first --set transfer.aux_fraction=0.2"
  [format_aux]="$R1 --set transfer.mode=format_aux --set transfer.aux_fraction=0.2"
)
EVALS="untrained:direct untrained:spell_first spell:direct spell:spell_first spellfirst_aux:spell_first format_aux:direct"
elif [ "$ROUND" = 2 ]; then
# Round 2 trains longer on twice the batch: round 1's adapters spelled 87-88 % of the first 100 test words.
# The session's GPU time ran out at step ~850 of marked/marked_hi: their step-750 checkpoints were
# evaluated (evals/marked*_step-750_*); sf_bridge (= configs/training/recipe.yaml) ran to 2000.
R2="--set training.max_steps=2000 --set training.batch_size=128"
declare -A TRIALS=(
  [sf_bridge]="$R2 --set transfer.mode=spell_first --set transfer.aux_fraction=0.2 --set transfer.bridge_fraction=0.1"
  [marked]="$R2 --set transfer.mode=spell_marked --set transfer.aux_fraction=0.2 --set transfer.bridge_fraction=0.1"
  [marked_hi]="$R2 --set transfer.mode=spell_marked --set transfer.aux_fraction=0.35 --set transfer.bridge_fraction=0.1"
)
EVALS="untrained:direct untrained:spell_first untrained:spell_marked sf_bridge:spell_first sf_bridge:direct marked:spell_marked marked_hi:spell_marked"
elif [ "$ROUND" = 3 ]; then
# Round 3: round 2's adapters answered no position question (sf_bridge echoed the word after its
# spelling; marked wrote whole words as units). spell_marked now writes two passes (the plain
# spelling, then the same units marked: data/modes.py), and a share of the list questions list
# single digits/symbols (transfer.aux_symbol_fraction), one-character units that reveal no letter.
R3="--set training.max_steps=2000 --set training.batch_size=128 --set model.max_seq_length=256 --set transfer.aux_fraction=0.3 --set transfer.aux_symbol_fraction=0.3"
declare -A TRIALS=(
  [mk2]="$R3 --set transfer.mode=spell_marked --set transfer.bridge_fraction=0.05"
  [mk2_b]="$R3 --set transfer.mode=spell_marked --set transfer.bridge_fraction=0.15"
  [sf_sym]="$R3 --set transfer.mode=spell_first --set transfer.bridge_fraction=0.05"
)
EVALS=${EVALS:-"untrained:spell_marked mk2:spell_marked mk2_b:spell_marked sf_sym:spell_first"}
elif [ "$ROUND" = 4 ]; then
# Round 4 (the default; prepared, not run yet): round 3 as it was (aux 0.3, symbols 0.3 of the word
# lists), plus half of the list questions over single LETTERS given separated in the prompt
# (transfer.aux_letter_fraction, data/tasks/letter_lists.py: "In the list q, x, b, m, what is the
# 3rd item?" -> q-x-b-m. Answer: b; lists that join into a dictionary word are redrawn), half of
# those worded "letter" (aux_letter_wording), and count answers 0-3 in equal shares on every list
# (aux_balanced_counts; letter lists always are). The same data build as rounds 1-3: the list
# questions are made at train time. Three trainings side by side: spell-first with round 3's 5 %
# word-echo bridge, spell-first without a bridge, and the direct form (format_aux). ll_sf_qb (the
# bridge that answers yes/no, "was the word in quotes?", transfer.bridge_answer=quoted) is defined
# but trains only when named: ONLY=ll_sf_qb bash gpu.sh train SECONDS.
R4="--set training.max_steps=2000 --set training.batch_size=128 --set model.max_seq_length=256 --set transfer.aux_fraction=0.3 --set transfer.aux_symbol_fraction=0.3 --set transfer.aux_letter_fraction=0.5 --set transfer.aux_letter_wording=0.5 --set transfer.aux_balanced_counts=true"
declare -A TRIALS=(
  [ll_sf]="$R4 --set transfer.mode=spell_first --set transfer.bridge_fraction=0.05"
  [ll_sf_nb]="$R4 --set transfer.mode=spell_first --set transfer.bridge_fraction=0.0"
  [ll_direct]="$R4 --set transfer.mode=format_aux --set transfer.bridge_fraction=0.0"
  [ll_sf_qb]="$R4 --set transfer.mode=spell_first --set transfer.bridge_fraction=0.05 --set transfer.bridge_answer=quoted"
)
DEFAULT_TRIALS="ll_sf ll_sf_nb ll_direct"
EVALS=${EVALS:-"untrained:direct untrained:spell_first ll_sf:spell_first ll_sf_nb:spell_first ll_direct:direct ll_sf_qb:spell_first"}
else
  echo "ROUND=$ROUND unknown; use 1, 2, 3 or 4" >&2; exit 2
fi
TRAIN=${ONLY:-${DEFAULT_TRIALS:-${!TRIALS[@]}}}  # ONLY="a b": train just those
phase=${1:?phase}
case $phase in
setup1)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  mkdir -p /tmp/gguf && cp .gguf/part00 /tmp/gguf/ && ls -la /tmp/gguf /tmp/site | head ;;
setup2)
  if ls .gpu/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/*.whl || exit 1
  fi
  cp .gguf/part01 /tmp/gguf/ && cat /tmp/gguf/part00 /tmp/gguf/part01 > $M && sha256sum $M | cut -c1-16
  mkdir -p /tmp/d && tar -C /tmp/d -xzf .gpu/data.tar.gz
  python3 -c "from spelltransfer.models.base_model import resolve_model_path; print(resolve_model_path('$M'))" ;;
train)
  secs=${2:-500}
  if [ "$ROUND" = 4 ] && ! python3 -c "import english_words" 2>/dev/null; then
    echo "round 4 needs english-words in /tmp/site: pip download --no-deps -d .gpu english-words==2.0.2 here, then setup2" >&2; exit 3
  fi
  model=$(python3 -c "from spelltransfer.models.base_model import resolve_model_path; print(resolve_model_path('$M'))")
  for name in $TRAIN; do
    out=$RUNS/$name; mkdir -p $out; resume=""; [ -d $out/checkpoints ] && resume="--resume"
    timeout $secs python3 -m spelltransfer.cli train -c configs/training/recipe.yaml -q -o $out $resume \
      --set training.data_dir=/tmp/d/recipe --set model.name=$model --set training.plot_dir=$out ${TRIALS[$name]} \
      > $out/log.$(date +%s) 2>&1 &
  done
  wait
  for name in $TRAIN; do echo "== $name"; tail -n 2 $RUNS/$name/events.jsonl | cut -c1-300; ls $RUNS/$name; done
  mkdir -p $OUT && tar -C $RUNS -czf $OUT/runs-state.tar.gz --exclude checkpoints --exclude final . ;;
eval)
  model=$(python3 -c "from spelltransfer.models.base_model import resolve_model_path; print(resolve_model_path('$M'))")
  E=/tmp/evals; mkdir -p $E
  ev() { python3 -m spelltransfer.cli eval --model $model --data /tmp/d/recipe --split test --batch-size 150 --no-progress "$@" > $E/log.$RANDOM 2>&1; }
  for pair in $EVALS; do
    name=${pair%%:*}; mode=${pair#*:}
    if [ $name = untrained ]; then ev --mode $mode --out $E/untrained_$mode.json &
    elif [ -d $RUNS/$name/final ]; then ev --adapter $RUNS/$name/final --mode $mode --out $E/${name}_$mode.json &
    fi
  done
  wait
  tail -n 3 $E/log.*
  for name in "${!TRIALS[@]}"; do cp $RUNS/$name/metrics.json $E/$name.metrics.json 2>/dev/null; cp $RUNS/$name/config.yaml $E/$name.config.yaml 2>/dev/null; done
  mkdir -p $OUT && tar -C $E -czf $OUT/evals.tar.gz --exclude 'log.*' . && (cd $E && tar -czf $OUT/evallogs.tar.gz log.*)
;;
export)
  # one adapter in bf16, cut in 15 MB pieces (16 MiB per file comes back)
  rm -rf /tmp/bf16; for name in "${@:2}"; do
    [ -d $RUNS/$name/final ] || continue
    python3 - $RUNS/$name/final /tmp/bf16/$name <<'PY'
import sys, shutil, pathlib, torch
from safetensors.torch import load_file, save_file
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]); dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.name == "adapter_model.safetensors":
        save_file({k: v.to(torch.bfloat16).contiguous() for k, v in load_file(f).items()}, dst / f.name, metadata={"format": "pt"})
    elif f.is_file() and f.name.startswith(("adapter_config", "README")):
        shutil.copy(f, dst / f.name)
PY
    cp $RUNS/$name/config.yaml /tmp/bf16/$name/training_config.yaml
  done
  tar -C /tmp/bf16 -cf /tmp/adapters.tar . && split -b 15000000 -d /tmp/adapters.tar $OUT/adapters.tar.part && ls -la $OUT ;;
esac
