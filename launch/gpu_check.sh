#!/usr/bin/env bash
# The GPU check in one command, for a fresh copy of the tree on a machine with one NVIDIA GPU
# and Python 3.12 with torch, torchvision, accelerate and tensorboard but without DeepSpeed,
# WebDataset and Submitit (and no index to install from):
#
#   bash launch/gpu_check.sh [--device cuda|cpu] [--quick] [--out DIR] [--only STEP[,STEP...]]
#
# Steps, in order, each under its own time limit (`timeout`), so that one that hangs or fails
# costs its own limit and the others still run; `--only` runs the steps named (e.g. to rerun a
# failed one alone, with a larger LIMIT_<STEP>):
#   preflight   Python, torch, torchvision, accelerate and CUDA versions, and every torch API the
#               code needs beyond the oldest torch it meets (F.grouped_mm, the collectives of
#               coordinate-parallel generation, compile's stance): a missing one fails here,
#               in seconds, and the check stops
#   install     what is missing, from the wheels `make gpu-wheels` prepared (.gpu-wheels/)
#   cuda_tests  `pytest -m cuda` (tests/test_cuda.py): bf16 vs fp32 generation, grouped GEMM vs
#               the loop kernel, compiled vs eager and no recompile over widths, ZeRO-3 on one
#               GPU, a two-stage run killed by SIGKILL and resumed; on CUDA, a run in which no
#               test passed is a failure (every test skipped: the GPU path was not checked)
#   generation  benchmarks/generation.py: ours vs the reference loop, FLOP/s, % of measured peak
#   train_step  benchmarks/train_step.py: the same for a whole training step, images/s
#   stage       benchmarks/stage.py: stage 0 + stage 1 of configs/fashion_mnist_resnet20_w050.yaml
#               at the standard 16/32/64 width (model.width=1.0), bf16, channels-last (the
#               teacher too): wall, images/s, peak memory; Fashion-MNIST from data/fashion-mnist
#               (`make gpu-data`)
#   configs     benchmarks/config_step.py: a training step of each GPU config (ImageNet ResNet-18
#               and -50, CIFAR-100 ResNet-56) on synthetic batches of its shape: s/step, images/s,
#               peak memory and the hours per stage its header is to state
# Every JSON goes to one folder (--out, else $OUT, else runs/gpu_check): generation_<dev>.json,
# train_step_<dev>.json, stage_<dev>.json, config_step_<dev>.json and gpu_check.json (steps, statuses, times, test
# outcomes), with gpu_check.log (every step's output); run directories and per-step logs stay
# in $WORK (default /tmp/gpu_check), so the folder holds 6 files. A summary table ends the run;
# the exit status is 1 when a step failed or ran out of time.
#
# The limits (seconds; env LIMIT_<STEP>) add up to 420 s: with the machine's start, the kill
# grace and the summary, a lent GPU's 15 minutes leave room to rerun a failed step alone.
# `--device cpu --quick` is the CI dry run (tests/test_gpu_check.py): every step runs its code
# path at tiny sizes on the CPU; the CUDA tests are collected and skipped.
set -uo pipefail
cd "$(dirname "$0")/.."

STEPS="preflight install cuda_tests generation train_step stage configs"
DEVICE=cuda QUICK=0 DEST=${OUT:-runs/gpu_check} ONLY=$STEPS
usage="usage: launch/gpu_check.sh [--device cuda|cpu] [--quick] [--out DIR] [--only STEP[,STEP...]] (steps: $STEPS)"
while [ $# -gt 0 ]; do
  case $1 in
    --device) DEVICE=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --out) DEST=$2; shift 2 ;;
    --only) ONLY=${2//,/ }; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
for s in $ONLY; do
  case " $STEPS " in *" $s "*) ;; *) echo "unknown step '$s'; $usage" >&2; exit 2 ;; esac
done
if [ -x .venv/bin/python ]; then PY=${PY:-.venv/bin/python}; else PY=${PY:-python3}; fi  # the device: python3
WHEELS=${GPU_WHEELS:-.gpu-wheels}
DATA=${GPU_DATA:-data/fashion-mnist}
WORK=${WORK:-/tmp/gpu_check}
mkdir -p "$DEST" "$WORK"
DEST=$(cd "$DEST" && pwd)
rm -f "$WORK/steps.tsv" "$DEST"/gpu_check.{json,log}
for s in $ONLY; do  # what the steps to run rewrite (a step rerun alone keeps the others' figures)
  case $s in cuda_tests) rm -f "$WORK/cuda_tests.xml" ;; generation|train_step|stage) rm -f "$DEST/${s}"_*.json ;; configs) rm -f "$DEST"/config_step_*.json ;; esac
done
export PY WHEELS WORK PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 NEUMETA_NO_BAR=1

LIMIT_PREFLIGHT=${LIMIT_PREFLIGHT:-15}
LIMIT_INSTALL=${LIMIT_INSTALL:-20}
LIMIT_CUDA_TESTS=${LIMIT_CUDA_TESTS:-120}
LIMIT_GENERATION=${LIMIT_GENERATION:-60}
LIMIT_TRAIN_STEP=${LIMIT_TRAIN_STEP:-65}
LIMIT_STAGE=${LIMIT_STAGE:-80}
LIMIT_CONFIGS=${LIMIT_CONFIGS:-60}

# step NAME LIMIT COMMAND...: runs it under `timeout`, its output into WORK/NAME.log and the
# combined log, and its status and seconds into WORK/steps.tsv (unless --only leaves it out).
step() {
  local name=$1 limit=$2; shift 2
  case " $ONLY " in *" $name "*) ;; *) return 0 ;; esac
  echo "== $name (limit ${limit} s): $*" | tee -a "$DEST/gpu_check.log"
  local t0=$SECONDS rc
  timeout -k 10 "$limit" "$@" > "$WORK/$name.log" 2>&1
  rc=$?
  tail -n 40 "$WORK/$name.log"
  cat "$WORK/$name.log" >> "$DEST/gpu_check.log"
  local status=ok
  if [ $rc = 124 ] || [ $rc = 137 ]; then status=timeout; elif [ $rc != 0 ]; then status="failed (rc $rc)"; fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" $((SECONDS - t0)) "$limit" >> "$WORK/steps.tsv"
  [ "$status" = ok ]
}

# Versions, and every API the code needs that an older torch may lack: the machine's image
# has its own torch (2.11 when this was written), not the pinned one.
preflight() {
  "$PY" - <<'PY'
import importlib.metadata as meta, platform, sys
import torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
for name in ("torchvision", "accelerate", "deepspeed", "webdataset", "submitit"):
    try:
        print(name, meta.version(name))
    except meta.PackageNotFoundError:
        print(name, "missing" + (" (the install step brings it)" if name in ("deepspeed", "webdataset", "submitit") else ""))
import torch.distributed as dist, torch.nn.functional as F
either = lambda *names: next((getattr(dist, n) for n in names if hasattr(dist, n)), None)
needed = {"torch.nn.functional.grouped_mm": getattr(F, "grouped_mm", None),
          "torch.distributed.all_gather_single (or all_gather_into_tensor)":
              either("all_gather_single", "all_gather_into_tensor"),
          "torch.distributed.reduce_scatter_single (or reduce_scatter_tensor)":
              either("reduce_scatter_single", "reduce_scatter_tensor"),
          "torch.compiler.set_stance": getattr(torch.compiler, "set_stance", None),
          "torch.get_autocast_dtype": getattr(torch, "get_autocast_dtype", None)}
try:
    from torch.fx.experimental import _config as fx_config
    needed["torch.fx.experimental._config.use_duck_shape"] = hasattr(fx_config, "use_duck_shape") or None
except ImportError:
    needed["torch.fx.experimental._config"] = None
import accelerate
needed["accelerate.utils.GradientAccumulationPlugin(sync_with_dataloader)"] = (
    "sync_with_dataloader" in accelerate.utils.GradientAccumulationPlugin.__dataclass_fields__) or None
missing = [n for n, v in needed.items() if v is None]
for n in missing:
    print("MISSING", n)
import neumeta_dist.training.loop  # the package imports under this torch
print("preflight:", "ok" if not missing else f"{len(missing)} missing API(s)")
sys.exit(1 if missing else 0)
PY
}
export -f preflight

# DeepSpeed, WebDataset and Submitit (and what they need that the image lacks), from the
# wheels folder: pip resolves against the packages already installed and takes from the
# folder only what is missing or too old. Where all three import already (here, CI), the
# folder's wheels are checked against the device's Python and platform, as a dry run, when
# it is there.
install() {
  local missing
  missing=$("$PY" -c 'import importlib.util as u; print(*[m for m in ("deepspeed", "webdataset", "submitit") if u.find_spec(m) is None])') || return 1
  if [ -z "$missing" ]; then
    echo "deepspeed, webdataset, submitit: already importable"
    [ -f "$WHEELS/requirements.txt" ] || { echo "(no $WHEELS: nothing to check)"; return 0; }
    # what the device would install, for its CPython 3.12 on x86-64 Linux (a dry run)
    "$PY" -m pip install -q --dry-run --ignore-installed --no-deps --no-index --target "$WORK/site312" \
      --python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 \
      --platform manylinux2014_x86_64 --only-binary=:all: "$WHEELS"/*.whl &&
      echo "every wheel of $WHEELS installs on CPython 3.12 x86-64 (dry run)"
    return
  fi
  if [ ! -f "$WHEELS/requirements.txt" ]; then
    echo "missing: $missing, and no $WHEELS/requirements.txt: run 'make gpu-wheels' where pip works and carry $WHEELS"
    return 1
  fi
  echo "installing $missing from $WHEELS: $(tr '\n' ' ' < "$WHEELS/requirements.txt")"
  "$PY" -m pip install -q --no-index --find-links "$WHEELS" -r "$WHEELS/requirements.txt" || return 1
  "$PY" -c 'import deepspeed, webdataset, submitit; print("deepspeed", deepspeed.__version__, "webdataset", webdataset.__version__)'
}
export -f install  # `timeout` runs commands, not functions: the step runs `bash -c install`

if [ "$DEVICE" = cpu ]; then
  export CUDA_VISIBLE_DEVICES=""  # the CPU path even where a GPU is visible: the CUDA tests skip
elif ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
  echo "error: --device cuda but $PY sees no CUDA device (the CPU dry run: --device cpu --quick)" >&2
  exit 2
fi

if [ -f "$DATA/t10k-labels-idx1-ubyte.gz" ]; then
  DATA_ARGS=("data.root=$DATA")
else  # the standard location (CI has the Debian package), else data.py's error says what to do
  echo "note: no $DATA (make gpu-data): Fashion-MNIST from its standard location"
  DATA_ARGS=()
fi
# the GPU path, teacher included, in the dry run too: bf16 autocast and channels-last
STAGE_ARGS=(--config configs/fashion_mnist_resnet20_w050.yaml model.width=1.0 train.precision=bf16
            train.channels_last=true "${DATA_ARGS[@]}")
if [ "$QUICK" = 1 ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  TINY=(--threads 1 --hidden 8 --layers 1 --num-freqs 2 --warmup 0 --peak-n 64)
  GEN_ARGS=("${TINY[@]}" --families resnet20 --repeats 1)
  STEP_ARGS=("${TINY[@]}" --cases fmnist-resnet20 --batch 2 --micro 2 --steps 1)
  # ResNet-50's 8.2 M coordinates take seconds a step on a CPU even with tiny heads: two configs
  CONFIG_ARGS=(--config configs/imagenet_resnet18.yaml configs/cifar100_resnet56.yaml --steps 1 --warmup 0
               --set data.batch_size=2 data.image_size=32 train.precision=fp32 train.channels_last=false
               inr.hidden=8 inr.layers=1 inr.num_freqs=2)
  STAGE_ARGS+=(data.train_limit=256 data.test_limit=128 data.batch_size=32 teacher.epochs=1 train.max_steps=2
               train.widths_per_step=2 train.log_every=1 recipe.warmup_steps=0 inr.hidden=8 inr.layers=1
               inr.num_freqs=2 "eval.widths=[1.0]")
else
  GEN_ARGS=(--repeats 5)
  STEP_ARGS=()
  CONFIG_ARGS=(--config configs/imagenet_resnet18.yaml configs/imagenet_resnet50.yaml configs/cifar100_resnet56.yaml
               --steps 3 --warmup 2)
fi

if ! step preflight "$LIMIT_PREFLIGHT" bash -c preflight; then
  echo "preflight failed: the steps after it would fail on the same API; stopping"
  "$PY" benchmarks/gpu_check.py "$DEST" "$WORK/steps.tsv" --device "$DEVICE" | tee -a "$DEST/gpu_check.log"
  exit 1
fi
step install "$LIMIT_INSTALL" bash -c install
step cuda_tests "$LIMIT_CUDA_TESTS" "$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider \
  --junitxml="$WORK/cuda_tests.xml"
step generation "$LIMIT_GENERATION" "$PY" benchmarks/generation.py --device "$DEVICE" --out "$DEST" "${GEN_ARGS[@]}"
step train_step "$LIMIT_TRAIN_STEP" "$PY" benchmarks/train_step.py --device "$DEVICE" --out "$DEST" "${STEP_ARGS[@]}"
step stage "$LIMIT_STAGE" "$PY" benchmarks/stage.py --device "$DEVICE" --out "$DEST" --run-dir "$WORK/stage_run" \
  "${STAGE_ARGS[@]}"
step configs "$LIMIT_CONFIGS" "$PY" benchmarks/config_step.py --device "$DEVICE" --out "$DEST" "${CONFIG_ARGS[@]}"
"$PY" benchmarks/gpu_check.py "$DEST" "$WORK/steps.tsv" "$WORK/cuda_tests.xml" --device "$DEVICE" | tee -a "$DEST/gpu_check.log"
