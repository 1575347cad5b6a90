#!/usr/bin/env bash
# The GPU checks, in one run on a machine with an NVIDIA GPU and no Rust toolchain.
#
# Here (a development machine, no GPU needed):
#   tests/gpu/check.sh --pack        # CUDA build + test binaries, stripped, into gpu-bin/
# There (from the repository root, gpu-bin/ and shared/data carried along):
#   tests/gpu/check.sh               # writes everything under ${OUT:-/tmp/gpu-check}
#
# What it runs there, each step's output in its own file:
#   1. nvidia-smi, and the CUDA libraries the binary will load (from the NVIDIA wheels that
#      PyTorch brings, put on LD_LIBRARY_PATH);
#   2. the kernel tests (unit tests, their `::cuda` variants) and the GPU integration tests,
#      with PIPEGNN_REQUIRE_GPU=1 so a missing GPU fails instead of skipping;
#   3. `pipegnn calibrate --device cuda`, then `compare --device cuda --profile` on the validation
#      scenarios (predicted against measured);
#   4. `pipegnn run --device cuda` and PyTorch Geometric on the same GPU (tests/reference),
#      for the epoch-time ratio.
set -uo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = "--pack" ]; then
  set -e
  eval "$(bash ../shared/cuda/setup-nvcc.sh)"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-cuda}"
  cargo_cuda build --release --features cuda
  tests=$(cargo_cuda test --release --features cuda --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["target"]["kind"][0], m["executable"])')
  rm -rf gpu-bin && mkdir -p gpu-bin
  strip -o gpu-bin/pipegnn "$CARGO_TARGET_DIR/release/pipegnn"
  while read -r kind exe; do
    case "$kind" in lib) strip -o gpu-bin/unit-tests "$exe" ;; test) strip -o gpu-bin/it-tests "$exe" ;; esac
  done <<< "$tests"
  rm -rf shared && mkdir -p shared/data && cp -r ../shared/data/cora ../shared/data/citeseer shared/data/
  du -sh gpu-bin shared
  exit 0
fi

OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
BIN="$PWD/gpu-bin"
DATA="$PWD/shared/data"
export PIPEGNN_DATA="$DATA"

# CUDA libraries: the NVIDIA wheels PyTorch installs (cuBLAS, cuRAND, NVRTC); libcuda comes with
# the driver.
NV_LIBS=$(python3 - <<'PY'
import glob, os, sys
dirs = set()
for p in sys.path:
    for d in glob.glob(os.path.join(p, "nvidia", "**", "lib"), recursive=True):
        dirs.add(d)
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="${NV_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{ nvidia-smi; echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; } > "$OUT/device.txt" 2>&1

export PIPEGNN_REQUIRE_GPU=1
# The test binaries run from the repository root, as cargo runs them.
"$BIN/unit-tests" cuda --test-threads 1 > "$OUT/unit-tests.txt" 2>&1
echo "unit tests rc=$?" | tee -a "$OUT/summary.txt"
PIPEGNN_BIN="$BIN/pipegnn" PIPEGNN_ROOT="$PWD" "$BIN/it-tests" cuda:: --test-threads 1 > "$OUT/it-tests.txt" 2>&1
echo "integration tests rc=$?" | tee -a "$OUT/summary.txt"

# A device profile of the GPU (one host thread per stage), then predictions with it against runs.
"$BIN/pipegnn" calibrate --device cuda --threads 1 --out "$OUT/cuda1.profile.json" \
  > "$OUT/calibrate.txt" 2>&1
echo "calibrate rc=$?" | tee -a "$OUT/summary.txt"
cora="--set graph.dataset.path=$DATA/cora --set executor.threads_per_device=1 --profile $OUT/cuda1.profile.json"
for s in cora-gcn-1stage cora-gpipe-drop cora-gcn cora-gat; do
  "$BIN/pipegnn" compare "scenarios/$s.yaml" $cora --device cuda --epochs 30 > "$OUT/compare-$s.txt" 2>&1
  echo "compare $s rc=$?" | tee -a "$OUT/summary.txt"
  "$BIN/pipegnn" compare "scenarios/$s.yaml" $cora --device cuda --epochs 30 --format json > "$OUT/compare-$s.json" 2>&1
done
"$BIN/pipegnn" compare scenarios/cora-gpipe-drop.yaml $cora --device cuda --epochs 30 \
  --set schedule.kind=1f1b > "$OUT/compare-cora-1f1b.txt" 2>&1
echo "compare 1f1b rc=$?" | tee -a "$OUT/summary.txt"

# Epoch time against PyG on the same GPU: the 1-stage GCN and GAT scenarios are PyG's Planetoid
# models. CiteSeer has 6 classes.
for data in cora citeseer; do
  set_data="--set graph.dataset.path=$DATA/$data"
  [ "$data" = citeseer ] && set_data="$set_data --set model.layers.1.out=6"
  for model in gcn gat; do
    scenario=scenarios/cora-gcn-1stage.yaml
    [ "$model" = gat ] && scenario=scenarios/cora-gat.yaml
    "$BIN/pipegnn" run "$scenario" $set_data --device cuda --format json \
      > "$OUT/pipegnn-$model-$data.json" 2> "$OUT/pipegnn-$model-$data.err"
    echo "pipegnn $model $data rc=$?" | tee -a "$OUT/summary.txt"
    python3 tests/reference/pyg_epoch.py --data "$DATA/$data" --model "$model" --device cuda \
      --sparse-input --epochs 200 > "$OUT/pyg-$model-$data.json" 2> "$OUT/pyg-$model-$data.err"
    echo "pyg $model $data rc=$?" | tee -a "$OUT/summary.txt"
  done
done
