"""Training and inference throughput, data-loader throughput, peak memory and (on CUDA)
model FLOPs utilisation. One JSON line per case on stdout, then a table.

    python bench/train_bench.py                                   # CPU-sized defaults
    python bench/train_bench.py --cases "pix2pix:unet:256:32:bf16" "pix2pix:unet:256:1:32" --compile
    python bench/train_bench.py --data ../shared/data/photos-train --workers 0 2

A case is model:generator:size:batch:precision. Each case times the trainer's own
iteration (Trainer.train_iteration: autocast, GradScaler, freezing, the recipe's steps)
on synthetic batches already on the device, so the figure is the model's speed; the
data loader is measured on its own (--data). `--baseline` also times a plain eager fp32
loop over the same nets, written as the reference implementation does it, for the
"no slower than plain eager" comparison.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gancolor.build import build, build_recipe  # noqa: E402
from gancolor.trainer import Trainer  # noqa: E402

from common import compose, device_peak  # noqa: E402

def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batch(cfg, device: torch.device, channels_last: bool) -> dict:
    """One real batch of the recipe's own data group (the sample photos by default),
    already on the device, as the trainer hands it to the recipe."""
    data = build(cfg.data, "data")
    data.setup()
    batch = data.device_batch(next(iter(data.train_loader())), device)
    if channels_last:
        batch = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}
    return batch


def time_iterations(fn, device: torch.device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters


def bench_case(spec: str, args) -> dict:
    model, generator, size, batch, precision = spec.split(":")
    size, batch = int(size), int(batch)
    cfg = compose([
        f"model={model}", f"generator={generator}", f"data.image_size={size}", f"data.batch_size={batch}",
        "data.num_workers=0", f"data.repeats={max(1, -(-batch // 4))}", *args.override,
    ])
    torch.manual_seed(0)
    recipe = build_recipe(cfg)
    trainer = Trainer(
        device=args.device, precision=precision, channels_last=args.channels_last,
        compile=args.compile, compile_mode=args.compile_mode, progress_bar=False,
    )
    trainer.setup(recipe)
    device = trainer.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    data = make_batch(cfg, device, args.channels_last)
    steps = recipe.adversarial_steps()
    counter = iter(range(10**9))
    seconds = time_iterations(lambda: trainer.train_iteration(steps, data, next(counter)), device, args.warmup, args.iters)
    row = {
        "case": spec, "device": str(device), "compile": args.compile, "channels_last": args.channels_last,
        "train_step_ms": seconds * 1e3, "train_images_per_sec": batch / seconds,
        "peak_memory_mb": peak_memory_mb(device),
    }

    recipe.eval()
    L = torch.rand(batch, 1, size, size, device=device) * 2 - 1
    with torch.no_grad(), trainer.autocast():
        infer = time_iterations(lambda: recipe.colorize(L), device, args.warmup, args.iters)
    row["inference_images_per_sec"] = batch / infer
    recipe.train()

    peak = device_peak(device)
    if peak is not None:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter_mode:
            trainer.train_iteration(steps, data, 0)
        flops = counter_mode.get_total_flops()
        row["flops_per_step"] = flops
        row["mfu"] = flops / seconds / peak

    if args.baseline and precision == "32" and model == "pix2pix":
        row["baseline_eager_fp32_step_ms"] = baseline_eager(cfg, size, batch, device, args) * 1e3
    return row


def baseline_eager(cfg, size: int, batch: int, device: torch.device, args) -> float:
    """The same nets and losses in a plain fp32 loop, as the reference pix2pix trains."""
    torch.manual_seed(0)
    G = build(cfg.generator, "generator").to(device)
    D = build(cfg.discriminator, "discriminator").to(device)
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce, l1 = torch.nn.BCEWithLogitsLoss(), torch.nn.L1Loss()
    data = make_batch(cfg, device, False)
    L, ab = data["L"], data["ab"]

    def step():
        fake = G(L)
        for p in D.parameters():
            p.requires_grad_(True)
        opt_D.zero_grad()
        pred_fake, pred_real = D(torch.cat([L, fake.detach()], 1)), D(torch.cat([L, ab], 1))
        loss_D = 0.5 * (bce(pred_fake, torch.zeros_like(pred_fake)) + bce(pred_real, torch.ones_like(pred_real)))
        loss_D.backward()
        opt_D.step()
        for p in D.parameters():
            p.requires_grad_(False)
        opt_G.zero_grad()
        pred = D(torch.cat([L, fake], 1))
        loss_G = bce(pred, torch.ones_like(pred)) + 100.0 * l1(fake, ab)
        loss_G.backward()
        opt_G.step()
        loss_G.item()  # the reference reads its losses back every iteration

    return time_iterations(step, device, args.warmup, args.iters)


def bench_loader(root: str, size: int, batch: int, workers: int, batches: int) -> dict:
    from gancolor.data import FolderDataModule

    data = FolderDataModule(root, image_size=size, batch_size=batch, num_workers=workers, val_fraction=0.0)
    loader = data.train_loader()
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            n += len(next(it)["path"])
        except StopIteration:
            it = iter(loader)
    seconds = time.perf_counter() - start
    return {"case": f"loader:{size}:{batch}:workers={workers}", "loader_images_per_sec": n / seconds}


def bench_decode(root: str, count: int) -> list[dict]:
    """PIL (what the loader uses, with EXIF and mode handling) vs torchvision.io."""
    from gancolor.data.images import find_images, load_rgb

    paths = [p for p in find_images(root) if p.suffix.lower() in (".jpg", ".jpeg")][:count]
    rows = []
    start = time.perf_counter()
    for p in paths:
        load_rgb(p)
    rows.append({"case": "decode:PIL(load_rgb)", "decode_images_per_sec": len(paths) / (time.perf_counter() - start)})
    try:
        from torchvision.io import ImageReadMode, decode_jpeg, read_file

        start = time.perf_counter()
        for p in paths:
            decode_jpeg(read_file(str(p)), mode=ImageReadMode.RGB)
        rows.append({"case": "decode:torchvision.io", "decode_images_per_sec": len(paths) / (time.perf_counter() - start)})
    except Exception as exc:  # torchvision built without its image codecs
        rows.append({"case": "decode:torchvision.io", "error": f"{type(exc).__name__}: {exc}"[:200]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["pix2pix:unet:128:4:32", "pix2pix:unet:128:4:bf16", "pix2pix:unet:256:1:32"])
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every case")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--baseline", action="store_true", help="also time a plain eager fp32 loop")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--data", help="a folder of photos: also measure the data loader and decoding")
    parser.add_argument("--workers", nargs="*", type=int, default=[0, 2])
    args = parser.parse_args()

    machine = {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
               "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    print(json.dumps({"machine": machine}), flush=True)
    rows = []
    for spec in args.cases:
        rows.append(bench_case(spec, args))
        print(json.dumps(rows[-1]), flush=True)
    if args.data:
        for workers in args.workers:
            rows.append(bench_loader(args.data, 256, 16, workers, batches=10))
            print(json.dumps(rows[-1]), flush=True)
        for row in bench_decode(args.data, 100):
            rows.append(row)
            print(json.dumps(row), flush=True)

    keys = sorted({k for r in rows for k in r if k != "case"})
    print("\n| case | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for r in rows:
        cells = [f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        print(f"| {r['case']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
