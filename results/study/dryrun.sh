#!/usr/bin/env bash
# The GPU sequence of README.md, dry-run here on CPU before GPU time is spent on it.
# A clone of HEAD (plus this tree's results/study scripts) plays "here"; each device call is a fresh
# `env -i` shell in a copy of its working tree (tracked + untracked-not-ignored files, shared/, the
# carried folder; ignored outputs of earlier calls kept, as there), with its own $OUT, and the
# machine's /tmp played by D/<machine>/tmp, kept between the calls of one machine. Differences from
# the GPU machine: this venv's Python 3.11 runs everything (the py3.12 wheels can't install into it:
# SITE is empty, and step 2 installs them into a python3.12 beside it and imports the controller's
# chain there), and the chunks train a tiny spec (2-layer model, a small dataset, steps of 50-4000).
#   D=/tmp/studydry  the scratch root (removed first)
#   PY312=python     a python3.12 with the GPU image's light packages (numpy, pyyaml, typer, rich, grpcio,
#                    protobuf, tqdm, packaging, markupsafe, ...); step 2 is skipped without it
#   DATA=dir         a built recipe dataset for prepare.sh (else it builds one, ~20 s)
# Checks: every call's exit status, the pieces and sizes, setup on the real GGUF, chunk 1 cold with
# trials cut, chunk 2 warm on the same machine without the state unpacked between the calls,
# `gpu.sh keep` + commit, chunk 3 cold on a fresh machine from the committed state, no trial twice.
set -euo pipefail
main=$(git rev-parse --show-toplevel)
D=${D:-/tmp/studydry}
PYV=$main/.venv/bin/python
rm -rf "$D" && mkdir -p "$D/out"
git clone -q "$main" "$D/here"
cp "$main"/results/study/{gpu.sh,prepare.sh,README.md} "$D/here/results/study/"
ln -s "$main/.venv" "$D/here/.venv"
git -C "$D/here" config user.email dry@run && git -C "$D/here" config user.name dryrun
here=$D/here

echo "== 1. prepare.sh (here)"
(cd "$here" && bash results/study/prepare.sh 2>&1) | grep -v "^WARNING: Location"
(cd "$here" && bash results/study/gpu.sh aside)

if [ -n "${PY312:-}" ]; then
  echo "== 2. the wheels under python3.12: install, import the sweep's chain, generate the gRPC stubs"
  "$PY312" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$D/site312" "$here"/.carry/*/*.whl \
    2>&1 | grep -v "^WARNING: Location" || true
  (cd "$here" && env -i PATH=/usr/bin:/bin HOME="$D" PYTHONPATH="$D/site312:$here/shared" "$PY312" -c "
import optuna, sqlalchemy, alembic, grpc, grpc_tools, google.protobuf as pb, pydantic, gguf
import spelltransfer.platform.protos, spelltransfer.sweep.chunk, spelltransfer.sweep.local, spelltransfer.sweep.controller
import spelltransfer.platform.worker, spelltransfer.cli
s = optuna.create_study(storage='sqlite:///$D/py312.db', study_name='x'); s.enqueue_trial({'a': 1})
print('python3.12 chain ok: optuna', optuna.__version__, 'grpc', grpc.__version__, 'protobuf', pb.__version__)")
  rm -rf "$here/shared/spelltransfer/_proto"  # made by 3.12's grpcio-tools; the calls make their own
fi

echo "== 3. a tiny model and dataset, and a tiny spec beside study.yaml (for the chunks)"
"$PYV" - "$D/tiny" <<'PY'
import sys, pathlib, torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from spelltransfer.models.base_model import resolve_model_path
from spelltransfer.data import build_dataset
out = pathlib.Path(sys.argv[1])
tok = AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m"))
cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
torch.manual_seed(0)
LlamaForCausalLM(cfg).save_pretrained(out / "model"); tok.save_pretrained(out / "model")
build_dataset(out / "data", tokenizer=tok, seed=0, train_words=60, eval_words=60, train_size=200,
              validation_per_task=6, test_per_task=6)
PY
sed -e 's/^name: study/name: study/' -e 's/training.eval_steps=100/training.eval_steps=10/' \
    -e 's/training.save_steps=100/training.save_steps=10/' -e 's/^max_trials: 64 /max_trials: 6  /' \
    -e 's/^  trials: 32 /  trials: 4  /' "$here/configs/sweeps/study.yaml" > "$here/dry-tiny.yaml"
"$PYV" - "$here/dry-tiny.yaml" <<'PY'
import sys, yaml
path = sys.argv[1]
spec = yaml.safe_load(open(path))
spec["overrides"] += ["training.eval_samples=4", "training.eval_batch_size=8", "transfer.eval_items_per_task=3",
                      "training.num_threads=1", "training.precision=fp32", "training.logging_steps=5",
                      "training.early_stopping.enabled=false"]  # the 4000-step trials run past chunk 1
spec["parameters"] = {"model.lora.r": {"values": [2, 4]}, "model.lora.alpha": {"values": [8, 16]},
                      "optimizer.lr": {"values": [1.0e-3, 2.0e-3]}, "training.micro_batch_size": {"values": [1, 2]},
                      "training.grad_accum": {"values": [1, 2]}, "training.max_steps": {"values": [50, 4000]}}
yaml.safe_dump(spec, open(path, "w"), sort_keys=False)
PY

# Every Python process of the calls records the distributions it imported (step 6 compares them
# with the GPU image's packages and the carried wheels).
mkdir -p "$D/trace/seen"
cat > "$D/trace/sitecustomize.py" <<PY
import atexit, os, sys, threading, time
def _dump():
    names = sorted({m.split(".")[0] for m, mod in list(sys.modules.items())
                    if "site-packages" in (getattr(mod, "__file__", None) or "")})
    with open(os.path.join("$D/trace/seen", str(os.getpid())), "w") as out:
        out.write("\\n".join(names))
def _loop():
    while True:
        time.sleep(2); _dump()
threading.Thread(target=_loop, daemon=True).start()
atexit.register(_dump)
PY

# call MACHINE CARRY LIMIT COMMAND: one device call; its $OUT stays as $LAST (files_at).
n=0
call() {
  local m=$1 carry=$2 limit=$3; shift 3
  local dev=$D/$m/repo; n=$((n + 1)); LAST=$D/out/$n; mkdir -p "$dev" "$D/$m/tmp" "$LAST"
  (cd "$here" && { git ls-files -z; git ls-files -z --others --exclude-standard; } | \
     tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$dev" -xf -
  rm -rf "$dev/shared" && cp -a "$here/shared" "$dev/shared"
  rm -rf "$dev/results/study/state"; [ ! -d "$here/results/study/state" ] || cp -r "$here/results/study/state" "$dev/results/study/"
  [ -z "$carry" ] || { rm -rf "${dev:?}/$carry" && mkdir -p "$(dirname "$dev/$carry")" && cp -a "$here/$carry" "$dev/$carry"; }
  echo "== call $n on $m (carry '${carry:-}'): $*"
  local rc=0
  (cd "$dev" && env -i PATH=/usr/bin:/bin HOME="$D/$m/tmp" OUT="$LAST" T="$D/$m/tmp" PY="$PYV" SITE= PYTHONPATH_PRE="$D/trace" \
     MODEL="$D/tiny/model" DATA="$D/tiny/data" SPEC=dry-tiny.yaml EXTRA="${EXTRA:-}" \
     WORKERS="${WORKERS:-1}" SLOTS="${SLOTS:-4}" PACK="${PACK:-4}" TARGET="${TARGET:-}" timeout "$limit" bash -c "$*") > "$LAST.log" 2>&1 || rc=$?
  grep -v "^WARNING: Location" "$LAST.log" | tail -n "${TAILN:-12}" | sed 's/^/   | /'
  echo "   rc=$rc, OUT: $(ls "$LAST" | tr '\n' ' ')"
  return $rc
}

echo "== 4. machine A: the three pieces (the third sets up on the real GGUF, then chunk 1), then chunk 2 warm"
# Machine A runs the design alone (TARGET=4, as session 1 of the plan: TARGET=32); B the rest.
export TARGET=4
call A .carry/1 600 "bash results/study/gpu.sh next 300"
call A .carry/2 600 "bash results/study/gpu.sh next 300"
call A .carry/3 600 "bash results/study/gpu.sh next 330"
first=$LAST
# No `keep` between the calls: chunk 2 must continue from machine A's own newer state, warm.
call A "" 600 "bash results/study/gpu.sh next 300" || [ $? = 3 ]
grep -q "warm: re-attached" "$LAST/chunk.log" && echo "   chunk 2 warm: ok" || { echo "   chunk 2 NOT warm"; exit 1; }
(cd "$here" && bash results/study/gpu.sh keep "$first" >/dev/null && bash results/study/gpu.sh keep "$LAST")

echo "== 5. machine B (fresh): the pieces again, then chunk 3 cold from the committed state"
export TARGET=
TAILN=4 call B .carry/1 600 "bash results/study/gpu.sh next 300"
TAILN=4 call B .carry/2 600 "bash results/study/gpu.sh next 300"
call B .carry/3 600 "bash results/study/gpu.sh next 560" || [ $? = 3 ]
grep -q "state: the tree's" "$LAST/chunk.log" && echo "   chunk 3 from the tree's state: ok"
(cd "$here" && bash results/study/gpu.sh keep "$LAST" && bash results/study/gpu.sh back >/dev/null)

echo "== 6. checks on the committed state"
"$PYV" - "$here/results/study/state" <<'PY'
import csv, json, sys, pathlib, collections
state = pathlib.Path(sys.argv[1])
rows = list(csv.DictReader((state / "trials.csv").open()))
chunks = [json.loads(line) for line in (state / "chunks.jsonl").read_text().splitlines()]
print("   chunks:", [(c["serial"], c["warm"], c["stop"], c["complete_after"], c["cut"]) for c in chunks])
print("   trials:", dict(collections.Counter(r["state"] for r in rows)))
ids = [r["worker_trial_id"] for r in rows if r["worker_trial_id"]]
assert len(ids) == len(set(ids)), "a worker trial twice"
done = [r for r in rows if r["state"] == "COMPLETE"]
design = [r["design_index"] for r in done if r["design_index"] != ""]
assert len(design) == len(set(design)), "a design row completed twice"
assert [c["serial"] for c in chunks] == list(range(1, len(chunks) + 1))
assert chunks[1]["warm"] and not chunks[2]["warm"]
assert chunks[0]["target"] == chunks[1]["target"] == 4 and chunks[2]["target"] == 6
assert chunks[0]["trials"] == 4 + len(chunks[0]["cut"]), "TARGET=4 asked more than the design"
for r in done:
    assert r["spelling_n"] and r["curve"] and (state / r["curve"]).exists(), r
print("   ok:", len(done), "COMPLETE, no trial twice, curves present")
PY
"$PYV" - "$D/trace/seen" <<'PY'
import importlib.metadata as md, pathlib, sys
image = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit
cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist
fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta
jax jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml
markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow
pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate
tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect
urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split())
carried = set("""pydantic pydantic-core annotated-types typing-inspection gguf trl datasets dill multiprocess optuna sqlalchemy
alembic mako colorlog grpcio grpcio-tools protobuf""".split())
norm = lambda n: n.lower().replace("_", "-")
dists = md.packages_distributions()
seen = set()
for f in pathlib.Path(sys.argv[1]).iterdir():
    seen |= set(f.read_text().split())
# "google" is a namespace every google-* distribution shares: only protobuf's part is imported.
# boto3 (with botocore, jmespath, s3transfer) comes from accelerate's `if is_boto3_available()`.
optional = {"boto3", "botocore", "jmespath", "s3transfer"}
seen = {top for top in seen if not top.startswith("_")} - {"google"}
used = {norm(d) for top in seen for d in dists.get(top, [top])}
missing = sorted(used - image - carried - optional)
print("   distributions the calls imported:", len(used), "; neither on the GPU image nor carried:", missing or "none",
      "; optional ones imported only where installed:", sorted(used & optional) or "none")
PY
git -C "$here" log --oneline -4
