"""Colour quality at equal budget: a gancolor config beside the reference implementation
and the all-gray baseline, on held-out real photos, at full resolution.

    python bench/quality.py --dry-run                      # a few steps, 2 held-out photos
    python bench/quality.py --minutes 10                   # default pix2pix vs the reference, 10 CPU minutes each
    python bench/quality.py --minutes 10 --config loss.d_augment=diffaugment
    python bench/quality.py --images 2000 --config model=cic
    python bench/quality.py --images 2400 --jobs 2 --threads 1 \
        --config --config model.ema_decay=0.999 --config loss.d_augment=diffaugment
                                                           # three configs + the reference, one table
    python bench/quality.py --select --images 1600 --config model=cic --colorize temperature=0.2 --colorize temperature=0.6
                                                           # one training, a row per decoding
    python bench/quality.py --images 1600 --seeds 3 --jobs 2 --threads 1 --config experiment=pix2pix_colorful
                                                           # 3 runs per side, then each side's mean and range

Several --config (each a list of overrides; an empty one is the default pix2pix) train in one
run beside ONE reference run, --jobs of them at a time; every row has the same data and budget.
--device cuda trains both sides on the GPU (gancolor trainer.device=cuda, the reference
--gpu_ids 0; colourising stays as it is: gancolor on the GPU, the reference's script on the
CPU). On the lent GPU machine (carry build/photos, a copy of the photos, 21 MB, and
build/reference; its files do not come back, so print the table into $OUT; not yet run there):
    python bench/quality.py --device cuda --minutes 5 --jobs 2 --photos build/photos --reference build/reference \
        --workdir /tmp/gq --no-record | tee $OUT/quality.txt

--reuse-reference WORKDIR scores an earlier run's reference outputs instead of training the
reference again, after checking that it ran on the same split at the same budget (its
reference_run.json); meant for settings checks with --select, where a second reference run
would cost as much as the config being checked.

Data: --photos (default ../shared/data/photos-train) is split ONCE by the fixed rule of
`split_photos`: sorted file names, every 8th held out. The held-out part is never trained
on and never used to choose settings. Both parts are symlinked under --workdir (default
/tmp/gancolor-quality), outside the repository.

Each side trains in its own process with the same thread count (OMP_NUM_THREADS), no
data-loader workers, 128 px crops, batch 4, for the same wall-clock budget from process
start (or the same number of images; with --jobs > 1 prefer --images, since sides that run
at once share the cores):
  gancolor:  python -m gancolor <config> data=folder ...; SIGTERM at the deadline (the
             trainer saves at the next step boundary), images seen = global_step x batch.
  reference: a copy of --reference (pytorch-CycleGAN-and-pix2pix, --model colorization,
             unet_128) in the workdir, run as `python train.py ...`. Its latest weights,
             saved every SAVE_EVERY images, are copied aside after each save; the copy made
             last before the deadline is the one scored.
Then `python -m gancolor.colorize` and the reference's colorize_full_res.py colourise the
held-out photos at their full size, the outputs are scored against the photos with
gancolor.metrics (the functions `python -m gancolor.evaluate` uses), and one table
(gray baseline, reference, gancolor) is appended to the "## Quality" section of
BENCHMARKS.md with a contact sheet (gray | gancolor | reference | truth) under
bench/results/. --no-record prints the table only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fcntl
import json
import os
import platform
import queue
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import color as skcolor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gancolor.data.images import load_rgb  # noqa: E402
from gancolor.metrics import histogram_intersection, image_metrics, summarize  # noqa: E402

HOLD_OUT_EVERY = 8  # the fixed split: sorted names, index % 8 == 7 held out
IMAGE_SIZE, BATCH_SIZE = 128, 4
SAVE_EVERY = 20  # reference: images between weight snapshots (a multiple of BATCH_SIZE)
SHEET_PHOTOS, SHEET_HEIGHT = 4, 96
RESULTS = ROOT / "bench" / "results"
REFERENCE_RUN = "reference_run.json"  # what a later --reuse-reference checks and reports
BENCHMARKS = ROOT / "BENCHMARKS.md"
SECTION = "## Quality"
SUFFIXES = {".jpg", ".jpeg", ".png"}


def split_photos(photos: Path, workdir: Path, dry_run: bool, select: bool = False) -> tuple[Path, Path]:
    """train/ and heldout/ symlink folders under workdir, by the one fixed rule. select: the
    same rule applied again INSIDE the training part, so that settings are chosen on photos
    of the training part and the held-out part stays untouched by that choice."""

    def split(names: list[str]) -> tuple[list[str], list[str]]:
        held = [n for i, n in enumerate(names) if i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1]
        return [n for n in names if n not in held], held

    train, held = split(sorted(p.name for p in photos.iterdir() if p.suffix.lower() in SUFFIXES))
    if select:
        train, held = split(train)
    if dry_run:
        held, train = held[:2], train[:16]
    split = workdir / "split"
    shutil.rmtree(split, ignore_errors=True)
    for part, files in (("train", train), ("heldout", held)):
        (split / part).mkdir(parents=True)
        for name in files:
            (split / part / name).symlink_to(photos.resolve() / name)
    return split / "train", split / "heldout"


def reap(process: subprocess.Popen, block: bool) -> float | None:
    """CPU seconds (user + system) of one finished child, None while it runs. os.wait4 gives
    each child's own usage, which RUSAGE_CHILDREN cannot when several run at once."""
    pid, status, usage = os.wait4(process.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return None
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["WANDB_MODE"] = "disabled"
    return env


# -- gancolor ------------------------------------------------------------------------------
def train_gancolor(config: list[str], train_dir: Path, run_dir: Path, budget: dict, env: dict, log, device: str = "cpu") -> dict:
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [
        sys.executable, "-m", "gancolor", *config,
        "data=folder", f"data.root={train_dir}", f"data.image_size={IMAGE_SIZE}", f"data.batch_size={BATCH_SIZE}",
        "data.num_workers=0", "data.val_fraction=0", f"trainer.device={device}", "trainer.val_every_n_epochs=0",
        "trainer.max_epochs=100000", "trainer.progress_bar=false", "logger=none", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    if budget.get("images"):
        command.append(f"trainer.max_steps={-(-budget['images'] // BATCH_SIZE)}")
    log(" ".join(command))
    started = time.monotonic()
    with open(run_dir.parent / f"{run_dir.name}_train.out", "w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = started + budget["seconds"] if budget.get("seconds") else None
        while (cpu := reap(process, block=False)) is None:
            if deadline and time.monotonic() > deadline:
                process.send_signal(signal.SIGTERM)  # the trainer saves at the next step boundary
                deadline = None
            time.sleep(0.5)
    seconds = time.monotonic() - started
    ckpt = run_dir / "checkpoints" / "last.pt"
    if process.returncode != 0 or not ckpt.is_file():
        raise SystemExit(f"quality: gancolor training failed (exit {process.returncode}); see {out.name}")
    step = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
    return {"ckpt": ckpt, "images": int(step) * BATCH_SIZE, "seconds": seconds, "cpu": cpu}


def colorize_gancolor(ckpt: Path, held_dir: Path, out_dir: Path, env: dict, device: str = "cpu", options: list[str] = ()) -> Path:
    shutil.rmtree(out_dir, ignore_errors=True)
    command = [
        sys.executable, "-m", "gancolor.colorize", f"ckpt={ckpt}", f"input={held_dir}", f"output={out_dir}",
        "output_ext=png", f"device={device}", "progress_bar=false", *options,
    ]  # fmt: skip
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return out_dir


# -- the reference ---------------------------------------------------------------------------
def train_reference(reference: Path, split_dir: Path, work: Path, budget: dict, env: dict, log, device: str = "cpu", tag: str = "") -> dict:
    """tag names the files of one of several runs in one workdir (--seeds)."""
    copy = work / f"reference{tag}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(reference, copy, ignore=shutil.ignore_patterns("checkpoints", "__pycache__"))
    name, snapshot = "quality", work / f"reference_G{tag}.pth"
    images_cap = budget.get("images")
    save_every = min(SAVE_EVERY, images_cap) if images_cap else SAVE_EVERY
    command = [
        sys.executable, "-u", "train.py", "--model", "colorization", "--dataroot", str(split_dir), "--name", name,
        "--gpu_ids", "-1" if device == "cpu" else "0", "--display_id", "0", "--no_html", "--num_threads", "0", "--netG", "unet_128",
        "--load_size", str(IMAGE_SIZE + IMAGE_SIZE // 8), "--crop_size", str(IMAGE_SIZE), "--batch_size", str(BATCH_SIZE),
        "--niter", "100000", "--niter_decay", "0", "--save_latest_freq", str(save_every), "--save_epoch_freq", "100000",
        "--print_freq", str(save_every), "--checkpoints_dir", str(work / f"reference_checkpoints{tag}"),
    ]  # fmt: skip
    log(" ".join(command))
    latest = work / f"reference_checkpoints{tag}" / name / "latest_net_G.pth"
    snapshot.unlink(missing_ok=True)
    started = time.monotonic()
    deadline = started + budget["seconds"] if budget.get("seconds") else None
    images = 0
    process = subprocess.Popen(command, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=forward_lines, args=(process.stdout, lines), daemon=True).start()
    saved_at = 0  # mtime of the weights file the last snapshot copied
    with open(work / f"reference_train{tag}.out", "w") as out:
        while not (deadline and time.monotonic() > deadline):
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break  # it ended on its own
            out.write(line)
            if not line.startswith("saving the latest model"):
                continue
            saved_at = wait_until_saved(latest, saved_at)
            shutil.copyfile(latest, snapshot)
            images = int(line.rsplit("total_iters", 1)[1].strip(" )\n"))
            if images_cap and images >= images_cap:
                break
    process.kill()
    cpu = reap(process, block=True)  # up to the kill, a little past the scored snapshot
    seconds = min(time.monotonic(), deadline or time.monotonic()) - started
    if not snapshot.is_file():
        raise SystemExit(f"quality: the reference saved no weights within the budget; see {work / f'reference_train{tag}.out'}")
    return {"ckpt": snapshot, "images": images, "seconds": seconds, "cpu": cpu, "copy": copy}


def reused_reference(workdir: Path, budget: dict, names: list[str], device: str = "cpu") -> dict:
    """An earlier run's reference side, when it was trained on the same split at the same budget:
    a reference row costs as much as a gancolor one, and a settings check need not pay it twice."""
    try:
        run = json.loads((workdir / REFERENCE_RUN).read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"quality: error: --reuse-reference: {workdir / REFERENCE_RUN} unreadable ({error})")
    if not isinstance(run, dict) or not {"budget", "held_out", "images", "seconds", "cpu"} <= run.keys():
        raise SystemExit(f"quality: error: --reuse-reference: {workdir / REFERENCE_RUN} is not one of this script's records")
    if run.get("device", "cpu") != device:  # records before --device existed trained on the CPU
        raise SystemExit(f"quality: error: --reuse-reference: {workdir}'s reference trained on {run.get('device', 'cpu')}, not {device}")
    if run["budget"] != budget or run["held_out"] != names:
        raise SystemExit(f"quality: error: --reuse-reference: {workdir} ran with budget {run['budget']} on "
                         f"{len(run['held_out'])} scored photos, not {budget} on these {len(names)}")  # fmt: skip
    return {**run, "out": workdir / "out_reference"}


def forward_lines(stream, lines: queue.Queue) -> None:
    # Read on a thread, so that the deadline is kept even while the reference is silent.
    for line in stream:
        lines.put(line)
    lines.put(None)


def wait_until_saved(path: Path, previous_mtime: int, timeout: float = 120.0) -> int:
    """The reference prints "saving" before it writes: wait until the file is newer
    than the last one copied and loads whole; returns its mtime."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            mtime = path.stat().st_mtime_ns
            if mtime > previous_mtime:
                torch.load(path, map_location="cpu", weights_only=True)
                return mtime
        except Exception:  # missing or half-written
            pass
        time.sleep(0.5)
    raise SystemExit(f"quality: the reference never finished writing {path}")


def colorize_reference(copy: Path, ckpt: Path, held_dir: Path, out_dir: Path, env: dict, threads: int) -> Path:
    shutil.rmtree(out_dir, ignore_errors=True)
    command = [
        sys.executable, "-W", "ignore::UserWarning", "colorize_full_res.py", "--peer_dir", str(copy), "--ckpt", str(ckpt), "--input_dir", str(held_dir),
        "--output_dir", str(out_dir), "--netG", "unet_128", "--seed", "0", "--threads", str(threads),
    ]  # fmt: skip
    subprocess.run(command, cwd=copy, env=env, check=True, stdout=subprocess.DEVNULL)
    return out_dir


# -- the all-gray baseline and scoring ---------------------------------------------------------
def gray_baseline(rgb: np.ndarray) -> np.ndarray:
    """The photo's own lightness with a = b = 0."""
    lab = skcolor.rgb2lab(rgb)
    lab[..., 1:] = 0.0
    return np.clip(np.round(skcolor.lab2rgb(lab) * 255.0), 0, 255).astype(np.uint8)


def as_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb[..., :3])).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def score(outputs: list[np.ndarray], truths: list[np.ndarray]) -> dict:
    """Set-level metrics (as gancolor.evaluate reports them) and per-photo medians."""
    per_image: dict[str, list[torch.Tensor]] = defaultdict(list)
    per_photo: dict[str, list[float]] = defaultdict(list)
    for out, truth in zip(outputs, truths):
        if out.shape != truth.shape:
            raise SystemExit(f"quality: an output is {out.shape}, its photo {truth.shape}")
        values = image_metrics(as_tensor(out), as_tensor(truth))
        for key, value in values.items():
            per_image[key].append(value)
        a, b = histogram_intersection(values["ab_hist"], values["ab_hist_true"])[0].tolist()
        per_photo["psnr"].append(float(values["psnr"][0]))
        per_photo["ssim"].append(float(values["ssim"][0]))
        per_photo["colorfulness_ratio"].append(float(values["colorfulness"][0] / values["colorfulness_true"][0].clamp_min(1e-8)))
        per_photo["hist_intersection_ab"].append((a + b) / 2)
    metrics = summarize(per_image)
    metrics.update({f"median_{key}": float(np.median(values)) for key, values in per_photo.items()})
    return metrics


def read_outputs(folder: Path, names: list[str]) -> list[np.ndarray]:
    return [load_rgb(folder / (Path(name).stem + ".png")) for name in names]


# -- the record ---------------------------------------------------------------------------------
COLUMNS = [
    ("PSNR", "psnr", 2), ("SSIM", "ssim", 3), ("MAE", "mae", 4), ("colourfulness ratio", "colorfulness_ratio", 2),
    ("hist a", "hist_intersection_a", 2), ("hist b", "hist_intersection_b", 2), ("median PSNR", "median_psnr", 2),
    ("median SSIM", "median_ssim", 3), ("median colourf. ratio", "median_colorfulness_ratio", 2),
    ("median hist ab", "median_hist_intersection_ab", 2),
]  # fmt: skip


def table(rows: list[tuple[str, dict | None, dict]]) -> str:
    head = ["", "images seen", "wall s", "CPU s", "images/s", *(title for title, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, run, metrics in rows:
        speed = ["-"] * 4 if run is None else [
            str(run["images"]), f"{run['seconds']:.0f}", f"{run['cpu']:.0f}", f"{run['images'] / max(run['seconds'], 1e-9):.2f}"
        ]
        cells = [label, *speed, *(f"{metrics[key]:.{digits}f}" for _, key, digits in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spread_table(gray: dict, reference: list[dict], configs: list[tuple[str, list[dict]]]) -> str:
    """Each side's mean and range over its runs, and where each config's mean beats the reference's
    (PSNR, SSIM, colourfulness ratio closer to 1, hist a, hist b) and the gray baseline's PSNR:
    at a small budget one run per side moves by about a dB between seeds, so single rows rank nothing."""
    head = ["mean (min-max) over runs", "runs", *(title for title, _, _ in COLUMNS), "mean beats the reference on", "mean beats gray PSNR"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def mean(runs: list[dict], key: str) -> float:
        return float(np.mean([run[key] for run in runs]))

    def wins(runs: list[dict]) -> str:
        def higher(key: str) -> bool:
            return mean(runs, key) > mean(reference, key)

        def off_one(side: list[dict]) -> float:
            return abs(mean(side, "colorfulness_ratio") - 1)

        better = {"PSNR": higher("psnr"), "SSIM": higher("ssim"), "ratio": off_one(runs) < off_one(reference),
                  "hist a": higher("hist_intersection_a"), "hist b": higher("hist_intersection_b")}  # fmt: skip
        return ", ".join(name for name, won in better.items() if won) or "none"

    for label, runs in [("reference (colorization, unet_128)", reference), *configs]:
        cells = [f"{mean(runs, key):.{digits}f} ({min(r[key] for r in runs):.{digits}f}-{max(r[key] for r in runs):.{digits}f})"
                 for _, key, digits in COLUMNS]  # fmt: skip
        verdict = ["-", "-"] if runs is reference else [wins(runs), "yes" if mean(runs, "psnr") > gray["psnr"] else "no"]
        lines.append("| " + " | ".join([label, str(len(runs)), *cells, *verdict]) + " |")
    return "\n".join(lines)


def contact_sheet(names, columns: list[list[np.ndarray]], path: Path) -> None:
    """One row per photo, one column per list (gray | each gancolor config | reference | truth),
    SHEET_HEIGHT px high."""
    rows = []
    for i in range(min(SHEET_PHOTOS, len(names))):
        tiles = []
        for image in (column[i] for column in columns):
            h, w = image.shape[:2]
            tiles.append(np.asarray(Image.fromarray(image).resize((round(w * SHEET_HEIGHT / h), SHEET_HEIGHT), Image.Resampling.BOX)))
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    # 256 colours: a sheet small enough to commit, still fine to judge colours by eye.
    Image.fromarray(np.concatenate(rows)).quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} CPU cores, load average {load} at the start; torch {torch.__version__}"


def record(text: str) -> None:
    current = BENCHMARKS.read_text() if BENCHMARKS.is_file() else "# Benchmarks\n"
    if SECTION not in current.splitlines():
        current = current.rstrip("\n") + f"\n\n{SECTION}\n\n" + SECTION_INTRO
    BENCHMARKS.write_text(current.rstrip("\n") + "\n\n" + text + "\n")


SECTION_INTRO = """\
`bench/quality.py`: a gancolor config and the reference implementation (pytorch-CycleGAN-and-pix2pix,
`--model colorization`, unet_128) trained on the same photos (the training part
of `../shared/data/photos-train`: sorted names, every 8th held out), 128 px crops, batch 4, the same
thread count and the same budget; then both colourise the held-out photos at full size and
gancolor.metrics scores them (set-level values as `gancolor.evaluate` reports them, then medians of
the per-photo values). The gray row is the photos' own lightness with a = b = 0. Wall seconds
count from process start (imports and set-up included) and images/s is images / wall seconds;
CPU seconds (user + system of the training process) show how much of the machine each side got
when it was shared.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="*", action="append", help="gancolor overrides, once per config (default: one, the default pix2pix)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="wall-clock minutes per side, from process start")
    budget.add_argument("--images", type=int, help="training images per side")
    parser.add_argument("--dry-run", action="store_true", help="a few steps, 2 held-out photos, nothing recorded")
    parser.add_argument("--select", action="store_true", help="choosing settings: score on every 8th photo OF THE TRAINING PART "
                        "(and train on the rest), never on the held-out part")  # fmt: skip
    parser.add_argument("--colorize", nargs="*", action="append", metavar="OPTION",
                        help="gancolor.colorize options, once per set (e.g. temperature=0.5 for model=cic): each trained "
                        "config is colourised with every set, one row each (default: one set, none)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="threads of each side")
    parser.add_argument("--jobs", type=int, default=1, help="sides training at once (the reference is one)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where both sides train (the reference: --gpu_ids 0); its colorize_full_res.py runs on the CPU")  # fmt: skip
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "photos-train")
    parser.add_argument("--reference", type=Path, default=ROOT.parent / "shared" / "peers" / "pix2pix-reference")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gancolor-quality"))
    parser.add_argument("--no-record", action="store_true", help="print the table; leave BENCHMARKS.md alone")
    parser.add_argument("--reuse-reference", type=Path, metavar="WORKDIR", action="append", default=[],
                        help="score the reference run of an earlier --workdir (same photos, split and budget: checked) "
                        "instead of training it again; the row says so. Once per reused run (with --seeds, up to N)")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="train every config N times (seed=0..N-1) and the reference N times (it sets no seed: each run "
                        "is a fresh draw), then add a table of each side's mean and range over the N runs")  # fmt: skip
    args = parser.parse_args()
    configs = args.config or [[]]
    decodings = args.colorize or [[]]
    seeds = range(max(1, args.seeds))
    if len(args.reuse_reference) > len(seeds):
        parser.exit(2, f"quality: error: {len(args.reuse_reference)} --reuse-reference for {len(seeds)} reference run(s)\n")
    for path, flag in ((args.photos, "--photos"), (args.reference / "train.py", "--reference")):
        if not path.exists():
            parser.exit(2, f"quality: error: {flag}: {path} not found\n")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "quality: error: --device cuda: torch sees no CUDA device here\n")
    if args.dry_run:
        run_budget = {"images": 3 * BATCH_SIZE}
    elif args.minutes:
        run_budget = {"seconds": args.minutes * 60}
    elif args.images:
        run_budget = {"images": args.images}
    else:
        parser.exit(2, "quality: error: give --minutes N, --images N or --dry-run\n")

    def log(message: str) -> None:
        print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)

    when, host = f"{datetime.now():%Y-%m-%d %H:%M}", machine()
    args.workdir.mkdir(parents=True, exist_ok=True)
    # Two runs in one workdir would write over each other's checkpoints and outputs: the second stops at once.
    lock = open(args.workdir / ".quality.lock", "w")  # noqa: SIM115 - held until the process ends
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        parser.exit(2, f"quality: error: --workdir {args.workdir} is in use by another bench/quality.py run\n")
    train_dir, held_dir = split_photos(args.photos, args.workdir, args.dry_run, args.select)
    names = sorted(p.name for p in held_dir.iterdir())
    log(f"{len(list(train_dir.iterdir()))} training photos, {len(names)} held out; {len(configs)} gancolor config(s); {host}")
    env = child_env(args.threads)

    def seeded(config: list[str], seed: int) -> list[str]:
        return [*config, f"seed={seed}"] if args.seeds > 1 else config

    def ours(index: int, seed: int) -> dict:
        tag = f"{index}_s{seed}" if seed else f"{index}"  # seed 0 keeps the one-seed run's names
        config = seeded(configs[index], seed)
        run = train_gancolor(config, train_dir, args.workdir / f"gancolor_{tag}", run_budget, env, log, args.device)
        log(f"gancolor {' '.join(config) or '(default)'}: {run['images']} images in {run['seconds']:.0f} s")
        # One training, several decodings: a decoding-time setting (cic's temperature, render_size)
        # is chosen without paying for the training again.
        run["outs"] = [
            colorize_gancolor(run["ckpt"], held_dir, args.workdir / (f"out_gancolor_{tag}" + (f"_{j}" if j else "")), env, args.device, options)
            for j, options in enumerate(decodings)
        ]  # fmt: skip
        return run

    reused = [reused_reference(workdir, run_budget, names, args.device) for workdir in args.reuse_reference]

    def theirs(k: int) -> dict:
        if k < len(reused):
            return reused[k]
        # Run 0 of this workdir is the one a later --reuse-reference takes; its record is stale
        # until it is scored, so that a half-made out_reference is never taken for it.
        tag = f"_{k}" if k else ""
        if not tag:
            (args.workdir / REFERENCE_RUN).unlink(missing_ok=True)
        run = train_reference(args.reference, train_dir.parent, args.workdir, run_budget, env, log, args.device, tag)
        log(f"reference run {k}: {run['images']} images in {run['seconds']:.0f} s")
        run["out"] = colorize_reference(run["copy"], run["ckpt"], held_dir, args.workdir / f"out_reference{tag}", env, args.threads)
        if not tag:
            (args.workdir / REFERENCE_RUN).write_text(json.dumps(
                {"budget": run_budget, "held_out": names, "device": args.device, **{key: run[key] for key in ("images", "seconds", "cpu")}}
            ))  # fmt: skip
        return run

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        # The references first, so that they never wait behind the configs.
        references = [pool.submit(theirs, k) for k in seeds]
        runs = {(i, k): pool.submit(ours, i, k) for k in seeds for i in range(len(configs))}
        runs = {key: run.result() for key, run in runs.items()}
        references = [reference.result() for reference in references]

    truths = [load_rgb(held_dir / name) for name in names]
    grays = [gray_baseline(t) for t in truths]
    gray_row = ("all-gray baseline (truth L, a=b=0)", None, score(grays, truths))
    # Rows by run (k), then by config and decoding; the contact sheet shows run 0's outputs.
    reference_rows, our_rows, our_images = [], defaultdict(list), []
    for k in seeds:
        reused_from = f", reused from {args.reuse_reference[k]}" if k < len(reused) else ""
        reference_rows.append(("reference (colorization, unet_128)" + (f", run {k}" if args.seeds > 1 else "") + reused_from,
                               references[k], score(read_outputs(references[k]["out"], names), truths)))  # fmt: skip
        for i, config in enumerate(configs):
            for options, out in zip(decodings, runs[i, k]["outs"]):
                label = "gancolor " + (" ".join(seeded(config, k)) or "pix2pix (default)") + (f", colorize {' '.join(options)}" if options else "")
                images = read_outputs(out, names)
                our_rows[i, tuple(options)].append((label, runs[i, k], score(images, truths)))
                our_images += [images] if k == 0 else []
    text = table([gray_row, *(row for k in seeds for row in [reference_rows[k], *(rows[k] for rows in our_rows.values())])])
    labels = [rows[0][0].replace(" seed=0", "") for rows in our_rows.values()]
    if args.seeds > 1:
        text += "\n\n" + spread_table(gray_row[2], [row[2] for row in reference_rows],
                                       [(label, [row[2] for row in rows]) for label, rows in zip(labels, our_rows.values())])  # fmt: skip
    their_images = read_outputs(references[0]["out"], names)
    budget_words = f"{args.minutes:g} min per side" if args.minutes else f"{run_budget['images']} images per side"
    scored_on = "selection photos (training part)" if args.select else "held-out photos"
    heading = f"### {when}: {'; '.join(labels)}, {budget_words}, {len(names)} {scored_on}"
    print(heading, text, sep="\n\n")
    if args.dry_run or args.no_record:
        return
    sheet = RESULTS / f"quality_{datetime.now():%Y%m%d_%H%M}.png"
    contact_sheet(names, [grays, *our_images, their_images, truths], sheet)
    columns = " | ".join(["gray", *(label.removeprefix("gancolor ") for label in labels), "reference", "truth"])
    record(
        f"{heading}\n\nMachine: {host}; training on {args.device}; {args.threads} thread(s) per side, {args.jobs} side(s) at once.\n"
        f"Command: `python bench/quality.py {' '.join(sys.argv[1:])}`\n\n{text}\n\n"
        f"Contact sheet ({columns}{'; run 0 of each' if args.seeds > 1 else ''}; first {SHEET_PHOTOS} {scored_on}): "
        f"[{sheet.relative_to(ROOT)}]({sheet.relative_to(ROOT)})"
    )
    log(f"recorded in {BENCHMARKS}; sheet {sheet}")


if __name__ == "__main__":
    main()
