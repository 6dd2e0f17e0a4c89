#!/usr/bin/env bash
# The GPU check: one command for a lent GPU machine (torch there, but none of gancolor's
# other dependencies, no internet, 10 minutes a command), tried first on a CPU with --dry-run.
#
#   bench/gpu_check.sh --dry-run        # here, on CPU: every stage, tiny sizes, no compile
#   bench/gpu_check.sh                  # on the GPU machine, with build/wheels and build/reference carried
#
# Stages, each bounded in time, everything written under $OUT (default build/gpu_check):
#   1. install the carried wheels (build/wheels: hydra-core, omegaconf, antlr4 4.9.3, kornia,
#      kornia_rs, albumentations, albucore, pydantic and its three helpers, stringzilla,
#      simsimd) into /tmp/gancolor-site; --dry-run installs them into a scratch folder for the
#      device's Python 3.12 instead (they cannot be imported here) to prove the set complete
#   2. pytest -m gpu                                                   -> pytest.log
#   3. steady-state steps/s (bench/steady_state.py): the reference at its colorization
#      defaults, gancolor at that identical config (fp32, then bf16), gancolor trainer=gpu
#                                                                      -> steady_state.jsonl
#   4. a real training run with trainer=gpu on a folder of JPEGs: train/images_per_sec
#      and train/data_wait through the loader                        -> real_run.jsonl
#   5. colorize photos/s on a folder of 12 MP JPEGs at workers=1 and 8 (bench/colorize_bench.py
#      --workers): decoding and encoding beside the net                -> colorize_workers.log
#   6. trainer.compile_mode=reduce-overhead on pix2pix's BatchNorm nets: does torch record
#      CUDA graphs, or skip them for the running statistics' in-place updates (TORCH_LOGS
#      perf_hints says "skipping cudagraphs"), and does any net hit the recompile limit
#                                                                      -> reduce_overhead.log
# Making the carried folders, on the machine with internet (see BENCHMARKS.md):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d build/wheels NAME==VERSION
#   cp -r ../shared/peers/pix2pix-reference build/reference
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-$PWD/build/gpu_check}
WHEELS=${GANCOLOR_WHEELS:-build/wheels}
REF=${GANCOLOR_REFERENCE:-build/reference}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" GANCOLOR_CACHE="${GANCOLOR_CACHE:-/tmp/gancolor-cache}"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
say() { echo "== $*" | tee -a "$SUMMARY"; }
# timeout SECONDS COMMAND...: SIGINT first, so Python reports where it stopped.
bounded() { local seconds=$1; shift; timeout --signal=INT --kill-after=15 "$seconds" "$@"; }
stage_end() { local rc=$1 name=$2; say "$name: exit $rc$([ "$rc" = 124 ] && echo ' (timed out)')"; }

say "gancolor GPU check $( [ $DRY = 1 ] && echo '(dry run on CPU)' ) $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null)"
python3 - <<'EOF' | tee -a "$SUMMARY"
import os, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cores", len(os.sched_getaffinity(0)),
      "| gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
EOF
command -v nvidia-smi >/dev/null && nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1

# 1. wheels ------------------------------------------------------------------------------
if [ -d "$REF" ] || [ ! -d ../shared/peers/pix2pix-reference ]; then :; else cp -r ../shared/peers/pix2pix-reference "$REF"; fi
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  if [ $DRY = 1 ]; then
    scratch=$(mktemp -d)
    bounded 120 python3 -m pip install -q --no-index --no-deps --no-compile --target "$scratch" --only-binary=:all: \
      --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux_2_28_x86_64 "$WHEELS"/*.whl
    rc=$?
    say "wheels: $(ls "$WHEELS"/*.whl | wc -l) installed for Python 3.12 into a scratch folder: $(ls "$scratch" | grep -c dist-info) packages"
    rm -rf "$scratch"
  else
    bounded 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gancolor-site "$WHEELS"/*.whl
    rc=$?
    export PYTHONPATH="$PYTHONPATH:/tmp/gancolor-site"
  fi
  stage_end $rc "1. wheels"
else
  say "1. wheels: none in $WHEELS (fine where gancolor's dependencies are installed)"
fi
python3 -c "import hydra, omegaconf, kornia, albumentations, gancolor.train" 2>&1 | tail -1 | tee -a "$SUMMARY"

# 2. pytest -m gpu -----------------------------------------------------------------------
# addopts cleared: the suite's own (-n for xdist) need not hold on another machine.
bounded 180 python3 -m pytest -q -o addopts="" -p no:cacheprovider -m gpu tests/test_gpu.py >"$OUT/pytest.log" 2>&1
rc=$?
tail -1 "$OUT/pytest.log" | tee -a "$SUMMARY"
stage_end $rc "2. pytest -m gpu"

# 3. steady state --------------------------------------------------------------------------
REFERENCE_CONFIG="data.image_size=256 data.batch_size=1"
if [ $DRY = 1 ]; then
  # Tiny, and no compile: only that every case runs and writes its figures.
  steady=(--warmup 2 --repeats 2 --steps 2 --max-seconds 30)
  tiny="generator.ngf=8 discriminator.ndf=8"
  cases=(--case "ref-config=$REFERENCE_CONFIG $tiny" --case "ref-config-bf16=$REFERENCE_CONFIG $tiny trainer.precision=bf16"
         --case "gpu=trainer=gpu data.batch_size=4 data.image_size=64 $tiny trainer.compile=false")
  bound=240
else
  steady=(--warmup 20 --repeats 3 --steps 50 --max-seconds 60)
  cases=(--case "ref-config=$REFERENCE_CONFIG" --case "ref-config-bf16=$REFERENCE_CONFIG trainer.precision=bf16"
         --case "gpu=trainer=gpu")
  bound=330
fi
reference=()
[ -d "$REF" ] && reference=(--reference "$REF")
bounded $bound python3 bench/steady_state.py "${reference[@]}" "${cases[@]}" "${steady[@]}" \
  --out "$OUT/steady_state.jsonl" >"$OUT/steady_state.log" 2>&1
rc=$?
grep '^|' "$OUT/steady_state.log" | tee -a "$SUMMARY"
stage_end $rc "3. steady state"

# 4. a real run through the loader -----------------------------------------------------------
photos=$(mktemp -d)
runs=$(mktemp -d)
python3 - "$photos" <<'EOF'
# 192 JPEGs of 1024 x 768 cut from the sample photos: a folder like a user's.
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from gancolor.data.datamodule import SAMPLE_PHOTOS
rng = np.random.default_rng(0)
photos = [Image.fromarray(load()[..., :3]) for load in SAMPLE_PHOTOS.values()]
for i in range(192):
    p = photos[i % len(photos)]
    w, h = p.size
    box = (int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4)))
    crop = p.crop((*box, box[0] + 3 * w // 4, box[1] + 3 * h // 4)).resize((1024, 768))
    crop.save(Path(sys.argv[1]) / f"{i:03d}.jpg", quality=92)
EOF
if [ $DRY = 1 ]; then
  run=(trainer=gpu data.batch_size=4 data.image_size=64 generator.ngf=8 discriminator.ndf=8 trainer.compile=false
       trainer.max_steps=6 trainer.log_every_n_steps=2)
  bound=150
else
  run=(trainer=gpu trainer.max_steps=200 trainer.pretrain_epochs=0)
  bound=200
fi
bounded $bound python3 -m gancolor "${run[@]}" data=folder "data.root=$photos" data.val_fraction=0.05 logger=none \
  trainer.progress_bar=false trainer.val_every_n_epochs=0 "hydra.run.dir=$runs/run" >"$OUT/real_run.log" 2>&1
rc=$?
cp "$runs/run/metrics.jsonl" "$OUT/real_run.jsonl" 2>/dev/null
python3 - "$OUT/real_run.jsonl" <<'EOF' | tee -a "$SUMMARY"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if "train/data_wait" in l] if __import__("os").path.exists(sys.argv[1]) else []
for r in rows:
    print(f"step {r['step']}: {r['train/images_per_sec']:.1f} images/s, data wait {100 * r['train/data_wait']:.1f}%")
if not rows:
    print("no train rows logged")
EOF
stage_end $rc "4. real run"
rm -rf "$photos" "$runs"

# 5. colorize: photos/s of a folder of 12 MP JPEGs, decoding and encoding on 1 vs 8 threads ----
if [ $DRY = 1 ]; then
  folder=(--sizes "2 MP" --folder-photos 2 --workers 1,2 --device cpu --cores 2)
  bound=150
else
  folder=(--sizes "12 MP" --folder-photos 16 --workers 1,8 --device cuda --cores 16 --precision bf16)
  bound=120
fi
bounded $bound python3 bench/colorize_bench.py "${folder[@]}" >"$OUT/colorize_workers.log" 2>&1
rc=$?
sed -n '/^| photo/,$p' "$OUT/colorize_workers.log" | tee -a "$SUMMARY"
stage_end $rc "5. colorize workers"

# 6. CUDA graphs with BatchNorm ---------------------------------------------------------------
if [ $DRY = 1 ]; then
  graphs=(data.image_size=64 generator.ngf=8 discriminator.ndf=8 trainer.compile=false trainer.max_steps=4)
  bound=90
else
  graphs=(data.batch_size=16 trainer.max_steps=30)
  bound=150
fi
runs=$(mktemp -d)
TORCH_LOGS="perf_hints,recompiles" bounded $bound python3 -m gancolor trainer=gpu trainer.compile_mode=reduce-overhead \
  trainer.pretrain_epochs=0 "${graphs[@]}" logger=none trainer.progress_bar=false "hydra.run.dir=$runs/run" >"$OUT/reduce_overhead.log" 2>&1
rc=$?
say "6. reduce-overhead, BatchNorm pix2pix: $(grep -c 'skipping cudagraphs' "$OUT/reduce_overhead.log") 'skipping cudagraphs' lines, $(grep -c 'recompile_limit' "$OUT/reduce_overhead.log") recompile-limit lines, $(grep -c 'Recompiling function' "$OUT/reduce_overhead.log") recompiles"
grep -m3 'skipping cudagraphs' "$OUT/reduce_overhead.log" | cut -c1-300 | tee -a "$SUMMARY"
stage_end $rc "6. reduce-overhead"
rm -rf "$runs"
say "done; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
