#!/usr/bin/env bash
# The GPU checks, in one run on a machine with an NVIDIA GPU and no Rust toolchain.
#
# Here (a development machine, no GPU needed):
#   tests/gpu/check.sh --pack        # CUDA build + test binaries, stripped, into gpu-bin/
# There (from the repository root, gpu-bin/ and shared/data carried along):
#   tests/gpu/check.sh [SECONDS]     # at most SECONDS (default 480) in all; everything lands in
#                                    # ${OUT:-/tmp/gpu-check}: summary.txt (each step's exit code
#                                    # and seconds) and gpu-check.tar.gz (each step's output)
#
# What it runs there, each step's output in its own file:
#   1. nvidia-smi, and the CUDA libraries the binary will load (from the NVIDIA wheels that
#      PyTorch brings, put on LD_LIBRARY_PATH);
#   2. the kernel tests (unit tests, their `::cuda` variants) and the GPU integration tests,
#      with PIPEGNN_REQUIRE_GPU=1 so a missing GPU fails instead of skipping;
#   3. `pipegnn calibrate --device cuda`, then `compare --device cuda --profile` on the validation
#      scenarios (predicted against measured);
#   4. `pipegnn fidelity --device cuda` with the GPU's profile, one graph at a time; then a second
#      calibration and one round of the matrix with it (the calibration-to-calibration spread);
#   5. `pipegnn run --device cuda` and PyTorch Geometric on the same GPU (tests/reference),
#      for the epoch-time ratio (PYG=0 leaves it out);
#   6. with `NCCL=1 tests/gpu/check.sh --pack` here, the NCCL transport's tests (tests/it/mpi.rs
#      in a `--features nccl` build: 2 ranks on 2 GPUs against the in-process CUDA run), where
#      the machine has `mpirun`, two GPUs and the MPI library the build links; else the reason
#      it was skipped.
# Every step has a time limit and the whole run a deadline, so that a hang costs one step, not
# the lease; a step that is skipped for want of time says so in summary.txt.
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
  # Stripped and compressed: the working tree that travels to the GPU machine is bounded.
  rm -rf gpu-bin && mkdir -p gpu-bin
  strip -o gpu-bin/pipegnn "$CARGO_TARGET_DIR/release/pipegnn"
  while read -r kind exe; do
    case "$kind" in lib) strip -o gpu-bin/unit-tests "$exe" ;; test) strip -o gpu-bin/it-tests "$exe" ;; esac
  done <<< "$tests"
  gzip -f gpu-bin/pipegnn gpu-bin/unit-tests gpu-bin/it-tests
  # The NCCL build links the system's MPI (libmpi.so.40), so it is a binary of its own.
  if [ "${NCCL:-0}" = 1 ]; then
    cargo_cuda build --release --features nccl
    strip -o gpu-bin/pipegnn-nccl "$CARGO_TARGET_DIR/release/pipegnn"
    it=$(cargo_cuda test --release --features nccl --no-run --message-format=json 2>/dev/null |
      python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m["target"]["kind"][0] == "test":
        print(m["executable"])')
    strip -o gpu-bin/it-tests-nccl "$it"
    gzip -f gpu-bin/pipegnn-nccl gpu-bin/it-tests-nccl
  fi
  rm -rf shared && mkdir -p shared/data
  cp -r ../shared/data/cora ../shared/data/citeseer ../shared/data/facebook ../shared/data/pubmed shared/data/
  du -sh gpu-bin shared
  exit 0
fi

OUT="${OUT:-/tmp/gpu-check}"
BUDGET="${1:-480}"
DEADLINE=$(( $(date +%s) + BUDGET ))
W=/tmp/gpu-check-work
rm -rf "$W" && mkdir -p "$W" "$OUT"
BIN=/tmp/gpu-bin
mkdir -p "$BIN"
for f in gpu-bin/*.gz; do
  gunzip -c "$f" > "$BIN/$(basename "$f" .gz)" && chmod +x "$BIN/$(basename "$f" .gz)"
done
DATA="$PWD/shared/data"
export PIPEGNN_DATA="$DATA"

# Runs `NAME LIMIT COMMAND...` with its output in $W/NAME.out and NAME.err, under LIMIT seconds and the
# deadline (10 s kept back for packing up); appends the exit code and seconds to the summary.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$(( DEADLINE - $(date +%s) - 10 ))
  if [ "$left" -lt 5 ]; then
    echo "$name skipped (no time left)" | tee -a "$W/summary.txt"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0 rc ms
  t0=$(date +%s%N)
  timeout -k 5 "$limit" "$@" > "$W/$name.out" 2> "$W/$name.err"
  rc=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "$name rc=$rc $((ms / 1000)).$((ms % 1000 / 100))s$([ $rc = 124 ] && echo " (timed out at ${limit}s)")" |
    tee -a "$W/summary.txt"
}
pack_up() {
  cp "$W/summary.txt" "$OUT/summary.txt"
  tar -C "$W" -czf "$OUT/gpu-check.tar.gz" .
}
trap pack_up EXIT

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
{
  date -u; nvidia-smi; echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
    echo "$lib: $(for d in ${NV_LIBS//:/ }; do ls "$d/$lib" 2>/dev/null; done | head -1)"
  done
  python3 -c 'import torch, torch_geometric; print("torch", torch.__version__, "pyg", torch_geometric.__version__, torch.cuda.get_device_name(0))'
  nproc; grep -m1 "model name" /proc/cpuinfo
} > "$W/device.txt" 2>&1

export PIPEGNN_REQUIRE_GPU=1
# The test binaries run from the repository root, as cargo runs them.
step unit-tests 90 "$BIN/unit-tests" cuda --test-threads 1
PIPEGNN_BIN="$BIN/pipegnn" PIPEGNN_ROOT="$PWD" step it-tests 150 "$BIN/it-tests" cuda:: --test-threads 1

# A device profile of the GPU (one host thread per stage), then predictions with it against
# runs. The quick grid first, so that there is a profile whatever the full grid's fate.
step calibrate-quick 60 "$BIN/pipegnn" calibrate --device cuda --threads 1 --quick \
  --out "$W/cuda1-quick.profile.json"
step calibrate 180 "$BIN/pipegnn" calibrate --device cuda --threads 1 --passes 1 \
  --out "$W/cuda1.profile.json" --samples "$W/cuda1.samples.json"
PROFILE="$W/cuda1.profile.json"
[ -s "$PROFILE" ] || PROFILE="$W/cuda1-quick.profile.json"
echo "profile: $PROFILE" >> "$W/summary.txt"
cora="--set graph.dataset.path=$DATA/cora --set executor.threads_per_device=1 --profile $PROFILE"
for s in cora-gcn-1stage cora-gpipe-drop cora-gcn cora-gat; do
  step "compare-$s" 60 "$BIN/pipegnn" compare "scenarios/$s.yaml" $cora --device cuda --epochs 30 --format json
done
step compare-cora-1f1b 60 "$BIN/pipegnn" compare scenarios/cora-gpipe-drop.yaml $cora --device cuda \
  --epochs 30 --set schedule.kind=1f1b --format json

# The fidelity matrix on the GPU with that profile, one graph at a time (each a JSON document),
# the shortest of ROUNDS rounds (default 3) standing for each configuration.
for graph in cora citeseer pubmed facebook synthetic; do
  step "fidelity-$graph" 150 "$BIN/pipegnn" fidelity --device cuda --profile "$PROFILE" \
    --data "$DATA" --only "$graph" --rounds "${ROUNDS:-3}" --seconds 0.5 --epochs 6 --format json
done

# A second calibration and one round of the matrix with it: how far calibrations apart move the
# figures.
step calibrate-again 180 "$BIN/pipegnn" calibrate --device cuda --threads 1 --passes 1 \
  --out "$W/cuda1-again.profile.json"
if [ -s "$W/cuda1-again.profile.json" ]; then
  for graph in cora citeseer pubmed facebook synthetic; do
    step "fidelity-again-$graph" 150 "$BIN/pipegnn" fidelity --device cuda \
      --profile "$W/cuda1-again.profile.json" --data "$DATA" --only "$graph" --rounds 1 \
      --seconds 0.5 --epochs 6 --format json
  done
fi

# Epoch time against PyG on the same GPU (PYG=0 leaves it out): the 1-stage GCN and GAT scenarios
# are PyG's Planetoid models. CiteSeer has 6 classes.
[ "${PYG:-1}" = 0 ] && echo "PyG left out (PYG=0)" >> "$W/summary.txt"
for data in $([ "${PYG:-1}" = 0 ] || echo cora citeseer); do
  set_data="--set graph.dataset.path=$DATA/$data"
  [ "$data" = citeseer ] && set_data="$set_data --set model.layers.1.out=6"
  for model in gcn gat; do
    scenario=scenarios/cora-gcn-1stage.yaml
    [ "$model" = gat ] && scenario=scenarios/cora-gat.yaml
    step "pipegnn-$model-$data" 60 "$BIN/pipegnn" run "$scenario" $set_data --device cuda --format json
    step "pyg-$model-$data" 90 python3 tests/reference/pyg_epoch.py --data "$DATA/$data" \
      --model "$model" --device cuda --sparse-input --epochs 200
  done
done

# The NCCL transport (packed with NCCL=1): two ranks under mpirun, each on a GPU of its own.
if [ -x "$BIN/pipegnn-nccl" ]; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
  if ! command -v mpirun >/dev/null; then
    echo "nccl skipped: no mpirun on this machine" >> "$W/summary.txt"
  elif [ "$gpus" -lt 2 ]; then
    echo "nccl skipped: $gpus GPU(s); NCCL refuses two ranks on one GPU" >> "$W/summary.txt"
  elif ! "$BIN/pipegnn-nccl" --version > "$W/nccl-start.out" 2>&1; then
    echo "nccl skipped: the NCCL build does not start (its MPI library?), see nccl-start.out" >> "$W/summary.txt"
  else
    PIPEGNN_BIN="$BIN/pipegnn-nccl" PIPEGNN_ROOT="$PWD" PIPEGNN_REQUIRE_NCCL=1 \
      step nccl 150 "$BIN/it-tests-nccl" mpi:: --test-threads 1
  fi
fi
