"""Steady-state training speed of gancolor configurations, and of the reference
implementation at its own defaults, on this machine. One JSON line per case (stdout and
--out), then a markdown table.

    python bench/steady_state.py --case "ref-config=data.image_size=256 data.batch_size=1" \
        --case "gpu=trainer=gpu" --warmup 20 --repeats 3 --steps 50
    python bench/steady_state.py --reference ../shared/peers/pix2pix-reference --case "ref-config=..."

A case is NAME=OVERRIDES (Hydra overrides, space-separated, on model=pix2pix by default).
What is timed: the trainer's own iteration (Trainer.train_iteration: autocast, the
GradScaler, freezing, every step of the recipe) plus `device_batch` (Lab conversion on the
device), on real photos already decoded: the model's speed, not the loader's (the loader
is measured by train/data_wait in a real run, and by bench/train_bench.py --data).
After --warmup iterations (torch.compile compiles there), --repeats runs of --steps
iterations each, timed with the device synchronised at both ends; median and spread
(max - min) of the per-step time. --max-seconds bounds each case: repeats stop early
(and say so) when it is spent.

MFU: FLOPs of one iteration as torch.utils.flop_counter counts them analytically from
the shapes of every matmul and convolution (forward and backward of G and D: pix2pix's
D step runs D on a real and a fake pair, its G step runs G and D once more), divided by
the step time and by the chip's dense bf16 peak (PEAK_BF16 in bench/common.py). fp32 rows are
reported against the same bf16 peak, so they read low by design.

--reference DIR runs the reference's train.py (its colorization model at its defaults:
unet_256, batch 1, 286 -> 256 crops, fp32) on the same photos and device, and reads the
per-iteration compute time it prints itself (`time:` with --print_freq 1, which also
reads its losses back every iteration; data loading excluded, as here).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gancolor.build import build, build_recipe  # noqa: E402
from gancolor.trainer import Trainer  # noqa: E402

from common import compose, device_peak  # noqa: E402

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {
        "cpu": cpu, "cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_avg": os.getloadavg(),
    }


def real_batches(cfg, device: torch.device, channels_last: bool, count: int = 4):
    """A few batches of the config's own data (the sample photos by default) on the device."""
    data = build(cfg.data, "data")
    data.setup()
    raws, loader = [], data.train_loader()
    loader.sampler.set_epoch(0)
    for raw in loader:
        raws.append(raw)
        if len(raws) == count:
            break
    return raws, data


def gancolor_case(name: str, overrides: list[str], args) -> dict:
    cfg = compose(["logger=none", "data.num_workers=0", *overrides])
    batch_size = int(cfg.data.batch_size)
    # The 6 sample photos, repeated until an epoch holds a few full batches.
    if "repeats" in cfg.data:
        cfg.data.repeats = max(int(cfg.data.repeats or 1), math.ceil(4 * batch_size / 6) + 1)
    torch.manual_seed(0)
    recipe = build_recipe(cfg)
    trainer = build(cfg.trainer, "trainer")
    trainer.progress_bar = False
    trainer.setup(recipe)
    device = trainer.device
    raws, data = real_batches(cfg, device, trainer.channels_last)
    steps = recipe.adversarial_steps()
    counter = iter(range(10**9))

    def iteration():
        i = next(counter)
        batch = data.device_batch(raws[i % len(raws)], device)
        if trainer.channels_last:
            batch = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}
        trainer.train_iteration(steps, batch, i)

    start = time.perf_counter()
    for _ in range(args.warmup):
        iteration()
    sync(device)
    warmup_s = time.perf_counter() - start
    per_step, cut_short = [], False
    for _ in range(args.repeats):
        if per_step and time.perf_counter() - start > args.max_seconds:
            cut_short = True
            break
        sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            iteration()
        sync(device)
        per_step.append((time.perf_counter() - t0) / args.steps)
    median = statistics.median(per_step)
    row = {
        "case": name, "overrides": " ".join(overrides), "device": str(device), "precision": trainer.precision,
        "compile": trainer.compile, "channels_last": trainer.channels_last, "batch": batch_size,
        "image_size": int(cfg.data.image_size), "warmup_steps": args.warmup, "warmup_s": warmup_s,
        "repeats": len(per_step), "steps_per_repeat": args.steps, "cut_short": cut_short,
        "step_ms_median": median * 1e3, "step_ms_spread": (max(per_step) - min(per_step)) * 1e3,
        "steps_per_sec": 1 / median, "images_per_sec": batch_size / median,
        "step_ms_repeats": [round(t * 1e3, 2) for t in per_step],
    }
    if device.type == "cuda":
        row["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        peak = device_peak(device)
        flops = iteration_flops(cfg, device, raws[0], data)
        row["flops_per_step"] = flops
        if peak is not None:
            row["mfu_vs_bf16_peak"] = flops / median / peak
    return row


def iteration_flops(cfg, device: torch.device, raw: dict, data) -> float:
    """FLOPs of one iteration, counted on an eager fp32 copy (they do not depend on
    precision or compilation)."""
    from torch.utils.flop_counter import FlopCounterMode

    recipe = build_recipe(cfg)
    trainer = Trainer(device=str(device), progress_bar=False)
    trainer.setup(recipe)
    batch = data.device_batch(raw, device)
    with FlopCounterMode(display=False) as counter:
        trainer.train_iteration(recipe.adversarial_steps(), batch, 0)
    return float(counter.get_total_flops())


def write_reference_photos(folder: Path, count: int) -> None:
    """The sample photos, as JPEGs under folder/train (the reference's layout), cycled to `count`."""
    from PIL import Image

    from gancolor.data.datamodule import SAMPLE_PHOTOS

    (folder / "train").mkdir(parents=True, exist_ok=True)
    loads = list(SAMPLE_PHOTOS.values())
    for i in range(count):
        Image.fromarray(loads[i % len(loads)]()[..., :3]).save(folder / "train" / f"{i:03d}.jpg", quality=95)


def reference_case(ref: Path, args) -> dict:
    """The reference's colorization model at its defaults, on `count` photos: its own
    per-iteration compute time, after the warm-up iterations."""
    total = args.warmup + args.repeats * args.steps
    with tempfile.TemporaryDirectory() as tmp:
        write_reference_photos(Path(tmp) / "data", total)
        command = [
            sys.executable, "train.py", "--model", "colorization", "--dataroot", f"{tmp}/data", "--name", "ref",
            "--checkpoints_dir", f"{tmp}/ckpt", "--gpu_ids", "0" if torch.cuda.is_available() else "-1",
            "--display_id", "0", "--no_html", "--num_threads", "0", "--niter", "1", "--niter_decay", "0",
            "--print_freq", "1", "--display_freq", "1000000", "--save_latest_freq", "1000000", "--save_epoch_freq", "1000",
            "--serial_batches",
        ]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=ref, capture_output=True, text=True, timeout=args.max_seconds * 3)
        except subprocess.TimeoutExpired as exc:
            done = subprocess.CompletedProcess(command, -1, exc.stdout or "", exc.stderr or "")
            done.stdout = done.stdout.decode() if isinstance(done.stdout, bytes) else done.stdout
        wall = time.perf_counter() - start
    times = [float(t) for t in re.findall(r"time: ([0-9.]+)", done.stdout)][args.warmup:]
    if not times:
        return {"case": "reference", "error": (done.stderr or done.stdout)[-1500:], "returncode": done.returncode}
    repeats = [times[i:i + args.steps] for i in range(0, len(times), args.steps) if len(times[i:i + args.steps]) == args.steps]
    per_step = [statistics.mean(r) for r in repeats] or [statistics.mean(times)]
    median = statistics.median(per_step)
    return {
        "case": "reference", "overrides": "colorization defaults (unet_256, batch 1, fp32)",
        "device": "cuda" if torch.cuda.is_available() else "cpu", "precision": "32", "batch": 1, "image_size": 256,
        "warmup_steps": args.warmup, "repeats": len(per_step), "steps_per_repeat": args.steps, "wall_s": wall,
        "step_ms_median": median * 1e3, "step_ms_spread": (max(per_step) - min(per_step)) * 1e3,
        "steps_per_sec": 1 / median, "images_per_sec": 1 / median,
        "step_ms_repeats": [round(t * 1e3, 2) for t in per_step],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", default=[], help="NAME=OVERRIDES (space-separated Hydra overrides)")
    parser.add_argument("--reference", type=Path, help="the reference implementation's folder: also time it")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="per case: repeats stop once it is spent")
    parser.add_argument("--out", type=Path, help="also append the JSON lines here")
    args = parser.parse_args()

    rows = [{"machine": machine()}]
    print(json.dumps(rows[0]), flush=True)

    def emit(row: dict) -> None:
        row["load_avg_after"] = os.getloadavg()
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")

    if args.out:
        args.out.write_text(json.dumps(rows[0]) + "\n")
    if args.reference:
        emit(reference_case(args.reference.resolve(), args))
    for spec in args.case:
        name, _, overrides = spec.partition("=")
        try:
            emit(gancolor_case(name, overrides.split(), args))
        except Exception as exc:  # one failing case must not lose the others' figures
            emit({"case": name, "overrides": overrides, "error": f"{type(exc).__name__}: {exc}"[:1500]})

    keys = ["precision", "batch", "repeats", "step_ms_median", "step_ms_spread", "images_per_sec", "mfu_vs_bf16_peak"]
    print("\n| case | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for r in rows[1:]:
        cells = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, r.get("error", "")[:60] if k == keys[0] else ""))
                 for k in keys]
        print(f"| {r['case']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
