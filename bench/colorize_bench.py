"""Time and peak memory of `python -m gancolor.colorize` on large photos.

    python bench/colorize_bench.py                      # 12 MP and 24 MP, 2 cores, render_size 256
    python bench/colorize_bench.py --photo ~/some.jpg --cores 2 --repeat 3
    python bench/colorize_bench.py --workers 1,8 --device cuda --cores 16 --sizes "12 MP"   # photos/s of a folder

The photos are made here: a real photo (scikit-image's astronaut unless --photo is
given) resized to 4000x3000 and 6000x4000, with film grain added so the JPEGs are as
hard to decode and encode as real ones (a smooth upscale compresses far too well).
The net is the pix2pix U-Net (ngf 64, 8 levels, the 256 px configuration), or with
--generator dynamic_unet the Dynamic U-Net on a ResNet18 encoder, with random weights:
the time does not depend on the weights' values.

Two measurements per photo, each in a fresh process pinned to --cores CPUs:
  per photo    `colorize.process` of one photo with the model loaded (decode, L, net,
               upsampling, recombination, JPEG encoding, atomic write), after one
               warm-up photo; the median of --repeat runs, wall time and CPU time
               (user + system, all threads). On a machine shared with other jobs the
               wall time grows with their load; the CPU time hardly does, and as long
               as one thread is always busy it bounds the wall time an idle machine
               would take (OpenMP's spin-waiting counts as CPU, so it over-estimates)
  end to end   the whole command, interpreter start and model loading included, and its
               peak resident memory (max RSS from wait4: tracemalloc misses torch's
               allocations)
With --workers (e.g. 1,8), instead of those two:
  photos/s     `colorize.process` over a folder of --folder-photos copies of the photo
               with the model loaded (after one warm-up photo), for each number of
               colorize's `workers`: how far the decoding and encoding threads keep a
               GPU fed (on the CPU, workers=1 is colorize's choice)
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = {"12 MP": (4000, 3000), "24 MP": (6000, 4000), "2 MP": (1600, 1200)}  # 2 MP: a quick check of the script


GENERATORS = {
    "unet": [],
    # Random encoder on purpose (weights=false): the time does not depend on the values,
    # and nothing is downloaded.
    "dynamic_unet": ["generator=dynamic_unet", "generator.encoder.name=resnet18", "generator.encoder.weights=false"],
}


def make_checkpoint(path: Path, image_size: int, generator: str = "unet") -> None:
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gancolor.build import build_recipe
    from gancolor.checkpoint import atomic_save, make_checkpoint as envelope
    from gancolor.cli import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"data.image_size={image_size}", "logger=none", *GENERATORS[generator]])
    torch.manual_seed(0)
    recipe = build_recipe(cfg)
    # Only the generator matters at inference, but load_recipe rebuilds the whole recipe.
    atomic_save(envelope(OmegaConf.to_container(cfg, resolve=True), recipe="pix2pix", nets=recipe.state_dict()), path)


def make_photo(path: Path, size: tuple[int, int], source: Path | None, gray: bool, seed: int = 0) -> None:
    if source is not None:
        image = Image.open(source).convert("RGB")
    else:
        from skimage import data

        image = Image.fromarray(data.astronaut())
    image = image.resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(image.convert("L") if gray else image).astype(np.int16)
    rng = np.random.default_rng(seed)
    grain = rng.normal(0, 6, pixels.shape[:2]).astype(np.int16)
    pixels = np.clip(pixels + (grain if gray else grain[..., None]), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=92)


def pinned(cores: int) -> tuple[list[str], dict]:
    env = {**os.environ, "OMP_NUM_THREADS": str(cores), "MKL_NUM_THREADS": str(cores)}
    prefix = ["taskset", "-c", f"0-{cores - 1}"] if shutil.which("taskset") and (os.cpu_count() or 1) >= cores else []
    return prefix, env


def run_child(cmd: list[str], env: dict, cwd: Path) -> str:
    """stdout of a helper process (each measurement runs in its own, so that one
    measurement's memory peak never counts towards another's)."""
    child = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({child.returncode}):\n{child.stderr[-2000:]}")
    return child.stdout


def end_to_end(ckpt: Path, photo: Path, out: Path, render_size: int, precision: str, cores: int, cwd: Path) -> tuple[float, float]:
    prefix, env = pinned(cores)
    helper = [
        sys.executable, __file__, "--child-end-to-end", str(ckpt), str(photo), str(out), str(render_size), precision,
    ]
    text = run_child(prefix + helper, env, cwd)
    result = json.loads(text.strip().splitlines()[-1])
    return result["seconds"], result["max_rss_mb"]


def child_end_to_end(ckpt: str, photo: str, out: str, render_size: str, precision: str) -> None:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "gancolor.colorize", f"ckpt={ckpt}", f"input={photo}", f"output={out}",
           f"render_size={render_size}", f"precision={precision}", "progress_bar=false", "overwrite=true"]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"colorize failed: {child.stderr.read()[-2000:]}")
    print(json.dumps({"seconds": seconds, "max_rss_mb": usage.ru_maxrss / 1024}))


def per_photo(ckpt: Path, photo: Path, out: Path, render_size: int, precision: str, cores: int, repeat: int, cwd: Path) -> tuple[float, float]:
    prefix, env = pinned(cores)
    helper = [sys.executable, __file__, "--child-per-photo", str(ckpt), str(photo), str(out), str(render_size), precision, str(repeat)]
    text = run_child(prefix + helper, env, cwd)
    result = json.loads(text.strip().splitlines()[-1])
    return result["median_s"], result["cpu_s"]


def child_per_photo(ckpt: str, photo: str, out: str, render_size: str, precision: str, repeat: str) -> None:
    import torch

    from gancolor.checkpoint import load_recipe
    from gancolor.colorize import Options, plan, process
    from gancolor.inference import Colorizer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    recipe, _ = load_recipe(ckpt)
    colorizer = Colorizer(recipe, int(render_size), precision=precision)
    warm = Path(out) / "warm.jpg"
    warm.parent.mkdir(parents=True, exist_ok=True)
    Image.open(photo).resize((640, 480)).save(warm)
    options = dict(ckpt=Path(ckpt), output=Path(out) / "result", overwrite=True, progress_bar=False)
    warm_options = Options(input=str(warm), **options)
    process(plan(warm_options)[0], colorizer, warm_options, log=lambda m: None)
    times, cpu = [], []
    for _ in range(int(repeat)):
        started, cpu_started = time.perf_counter(), time.process_time()
        job_options = Options(input=photo, **options)
        tally = process(plan(job_options)[0], colorizer, job_options, log=lambda m: None)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        assert len(tally.written) == 1, tally
    print(json.dumps({"median_s": statistics.median(times), "cpu_s": statistics.median(cpu), "all_s": times}))


def photos_per_second(ckpt: Path, photo: Path, count: int, work: Path, args, workers: int) -> float:
    folder = work / f"folder_{photo.stem}"
    if not folder.is_dir():
        folder.mkdir()
        for i in range(count):
            shutil.copyfile(photo, folder / f"{i:03d}.jpg")
    prefix, env = pinned(args.cores)
    helper = [sys.executable, __file__, "--child-folder", str(ckpt), str(folder), str(work / "out_folder"),
              str(args.render_size), args.precision, args.device, str(workers), str(args.batch_size or "")]
    return json.loads(run_child(prefix + helper, env, work).strip().splitlines()[-1])["photos_per_s"]


def child_folder(ckpt: str, folder: str, out: str, render_size: str, precision: str, device: str, workers: str, batch_size: str) -> None:
    import torch

    from gancolor.checkpoint import load_recipe
    from gancolor.colorize import Options, plan, process
    from gancolor.inference import Colorizer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    recipe, _ = load_recipe(ckpt, device)
    colorizer = Colorizer(recipe, int(render_size), device, precision)
    options = {"ckpt": Path(ckpt), "output": Path(out), "overwrite": True, "progress_bar": False,
               "workers": int(workers), "batch_size": int(batch_size) if batch_size else None}
    photos = sorted(Path(folder).iterdir())
    warm_options = Options(input=str(photos[0]), **options)  # CUDA start-up, cuDNN's choice of kernels
    process(plan(warm_options)[0], colorizer, warm_options, log=lambda m: None)
    run_options = Options(input=folder, **options)
    jobs = plan(run_options)[0]
    started = time.perf_counter()
    tally = process(jobs, colorizer, run_options, log=lambda m: None)
    seconds = time.perf_counter() - started
    assert len(tally.written) == len(jobs), tally
    print(json.dumps({"photos_per_s": len(jobs) / seconds, "seconds": seconds}))


def machine(cores: int) -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import torch

    return f"{model}, {cores} cores (of {os.cpu_count()}), torch {torch.__version__}, Python {platform.python_version()}"


def _load() -> str:
    # Other jobs on the same cores slow every figure down: printed with them.
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-end-to-end":
        return child_end_to_end(*sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--child-per-photo":
        return child_per_photo(*sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--child-folder":
        return child_folder(*sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", type=Path, default=None, help="a colour photo to scale up (default: scikit-image's astronaut)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--render-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="12 MP,24 MP", help=f"comma-separated, from: {', '.join(SIZES)}")
    parser.add_argument("--color-input", action="store_true", help="also time colour (RGB) JPEG inputs")
    parser.add_argument("--generator", choices=sorted(GENERATORS), default="unet")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    parser.add_argument("--workers", default=None, help="comma-separated colorize workers= values (e.g. 1,8): measure photos/s of a folder instead")
    parser.add_argument("--folder-photos", type=int, default=16, help="photos in the folder --workers times")
    parser.add_argument("--device", default="cpu", help="for --workers: cpu, cuda, cuda:N")
    parser.add_argument("--batch-size", type=int, default=None, help="for --workers: colorize's batch_size (default: its own)")
    args = parser.parse_args()
    if args.workers is not None:
        return folder_table(args)

    head = "| photo | input | generator | render_size | precision | per photo | its CPU time | end to end | peak RSS |"

    def rows(ckpt: Path, work: Path):
        for label, kind, photo in bench_photos(args, work):
            t_photo, cpu_photo = per_photo(ckpt, photo, work / "out", args.render_size, args.precision, args.cores, args.repeat, work)
            t_total, rss = end_to_end(ckpt, photo, work / "out_e2e", args.render_size, args.precision, args.cores, work)
            size = SIZES[label]
            yield f"| {label} ({size[0]}x{size[1]}) | {kind} | {args.generator} | {args.render_size} | {args.precision} | {t_photo:.2f} s | {cpu_photo:.2f} s | {t_total:.2f} s | {rss:.0f} MB |"

    print_table(args, head, rows)


def folder_table(args) -> None:
    workers = [int(w) for w in args.workers.split(",")]
    head = "| photo | input | generator | render_size | precision | device | workers | photos/s |"

    def rows(ckpt: Path, work: Path):
        for label, kind, photo in bench_photos(args, work):
            for n in workers:
                rate = photos_per_second(ckpt, photo, args.folder_photos, work, args, n)
                yield f"| {label} | {kind} | {args.generator} | {args.render_size} | {args.precision} | {args.device} | {n} | {rate:.2f} |"

    print_table(args, head, rows, f"{args.folder_photos} photos a folder")


def bench_photos(args, work: Path):
    """(size label, input kind, JPEG path) of every photo the table measures."""
    kinds = [("gray JPEG", True)] + ([("RGB JPEG", False)] if args.color_input else [])
    for label in (label.strip() for label in args.sizes.split(",")):
        for kind, gray in kinds:
            photo = work / f"{label.replace(' ', '')}_{'gray' if gray else 'rgb'}.jpg"
            make_photo(photo, SIZES[label], args.photo, gray)
            yield label, kind, photo


def print_table(args, head: str, rows, *notes: str) -> None:
    """Make a checkpoint in a scratch folder, print each row as it is measured, then the
    machine and the whole table (scratch folder removed)."""
    load_before = _load()
    work = Path(tempfile.mkdtemp(prefix="gancolor-bench-"))
    try:
        ckpt = work / f"{args.generator}.pt"
        make_checkpoint(ckpt, 256, args.generator)
        done = []
        for row in rows(ckpt, work):
            done.append(row)
            print(row, flush=True)
        print()
        print(f"Machine: {machine(args.cores)}")
        print(f"Load average before / after: {load_before} / {_load()}")
        for note in notes:
            print(note)
        print(head)
        print("|---" * head.count(" | ") + "|---|")
        print("\n".join(done))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
