"""The fast paths a GPU run takes, checked on the CPU: the optimiser kernel, the loader
(workers from the cores, reduced JPEG decoding, OpenCV threads), the speed figures the
trainer logs, the collectives a DDP step makes (none outside log steps), what compile
leaves eager, and StarGAN's gradient penalty under fp16's loss scale."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from torch import nn

from gancolor.data.datamodule import MAX_AUTO_WORKERS, FolderDataModule, resolve_num_workers, seed_worker
from gancolor.data.images import load_rgb
from gancolor.errors import ConfigError
from gancolor.losses import gradient_penalty
from gancolor.models.pix2pix import Pix2Pix
from gancolor.models.stargan import StarGAN
from gancolor.nets import PatchDiscriminator, UNetGenerator
from gancolor.trainer import Trainer
from helpers import compose, shrink

from gancolor.build import build_recipe


def tiny_pix2pix() -> Pix2Pix:
    torch.manual_seed(0)
    return Pix2Pix(UNetGenerator(ngf=4, image_size=32), PatchDiscriminator(ndf=4, n_layers=1), {"gan_mode": "vanilla", "lambda_L1": 100.0})


# -- optimiser ---------------------------------------------------------------------------------
def test_adam_takes_the_multi_tensor_kernel_on_cpu_and_chooses_again_after_loading_a_state():
    recipe = tiny_pix2pix()
    optimizers = recipe.configure_optimizers()
    for opt in optimizers.values():
        assert all(g["foreach"] is True and not g["fused"] for g in opt.param_groups)
    # A state saved where the fused kernel ran (a GPU) loads onto CPU parameters with
    # the CPU's kernel, not the saved one.
    state = optimizers["G"].state_dict()
    for group in state["param_groups"]:
        group.update(fused=True, foreach=None)
    optimizers["G"].load_state_dict(state)
    assert all(g["foreach"] is True and not g["fused"] for g in optimizers["G"].param_groups)


# -- loader --------------------------------------------------------------------------------------
def test_num_workers_auto_is_the_cores_left_to_the_loader_capped(small_photo_folder):
    cores = len(os.sched_getaffinity(0))
    assert resolve_num_workers("auto") == max(0, min(cores - 1, MAX_AUTO_WORKERS))
    data = FolderDataModule(small_photo_folder, image_size=32, num_workers="auto", prefetch_factor=3)
    assert data.num_workers == resolve_num_workers("auto")
    with pytest.raises(ConfigError, match="data.num_workers: must be a number or auto, got 'many'"):
        FolderDataModule(small_photo_folder, num_workers="many")
    with pytest.raises(ConfigError, match="data.prefetch_factor"):
        FolderDataModule(small_photo_folder, prefetch_factor=0)


def test_large_jpegs_are_decoded_reduced_but_never_below_what_the_crop_needs(tmp_path, photos):
    big = np.asarray(Image.fromarray(photos[0]).resize((1600, 1200)))  # astronaut, 4:3
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=90)
    full = load_rgb(path)
    assert full.shape == (1200, 1600, 3)
    reduced = load_rgb(path, min_side=200)  # libjpeg's 1/4 scale: 300 x 400, the 1/8 one would be too small
    assert reduced.shape == (300, 400, 3)
    # The same photo, only smaller: compare with a box downscale of the full decode.
    box = np.asarray(Image.fromarray(full).resize((400, 300), Image.Resampling.BOX)).astype(float)
    assert np.abs(reduced.astype(float) - box).mean() < 4.0
    assert load_rgb(path, min_side=700).shape == (1200, 1600, 3)  # less than 2x larger: decoded whole
    png = tmp_path / "big.png"
    Image.fromarray(big).save(png)
    assert load_rgb(png, min_side=200).shape == (1200, 1600, 3)  # only JPEGs have a draft mode

    # A data module decodes reduced down to what its smallest random crop needs.
    data = FolderDataModule(tmp_path, image_size=64, scale_min=0.5, num_workers=0, val_fraction=0.0)
    side = data.decode_min_side()
    assert 64 / 0.5**0.5 <= side <= 64 / (0.5 * 0.75) ** 0.5 + 1
    assert data._datasets()[0].decode_min_side == side
    assert next(iter(data.train_loader()))["rgb"].shape[-2:] == (64, 64)


class _ThreadCount(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        import cv2

        return cv2.getNumThreads()


def test_loader_workers_leave_opencv_single_threaded():
    import cv2

    assert cv2.getNumThreads() > 1 or len(os.sched_getaffinity(0)) == 1  # in this process, OpenCV's pool is on
    loader = torch.utils.data.DataLoader(_ThreadCount(), batch_size=2, num_workers=1, worker_init_fn=seed_worker)
    assert next(iter(loader)).tolist() == [1, 1]  # setNumThreads(0): OpenCV runs on the calling thread


# -- what the trainer logs -----------------------------------------------------------------------
class SlowLoader:
    """A real data module's batches, each made to take `delay` seconds more to arrive."""

    def __init__(self, loader, delay: float) -> None:
        self.loader, self.delay = loader, delay

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            time.sleep(self.delay)
            yield batch


class Rows:
    def __init__(self):
        self.rows = []

    def log_metrics(self, metrics, step):
        self.rows.append(dict(metrics, step=step))


def test_images_per_sec_and_data_wait_are_measured_over_the_whole_interval(small_photo_folder, one_thread):
    data = FolderDataModule(small_photo_folder, image_size=32, batch_size=2, num_workers=0, val_fraction=0.0)
    recipe = tiny_pix2pix()
    trainer = Trainer(device="cpu", progress_bar=False, log_every_n_steps=2)
    trainer.setup(recipe)
    trainer.data, trainer.logger = data, Rows()
    loader = data.train_loader()
    loader.sampler.set_epoch(0)
    start = time.perf_counter()
    trainer.train_epoch(SlowLoader(loader, 0.25), "adversarial", 0)
    elapsed = time.perf_counter() - start
    rows = trainer.logger.rows
    assert [r["step"] for r in rows] == [2, 4]
    # Each interval (2 batches of 2 images, 4 / images_per_sec seconds long) waited at least the
    # 2 x 0.25 s the loader slept: the share times the interval's length, not the share alone,
    # since how long the steps between take depends on the machine's load.
    for row in rows:
        interval = 4 / row["train/images_per_sec"]
        assert 0.5 <= row["train/data_wait"] * interval <= interval, (row["train/data_wait"], interval)
    # 8 images in the two intervals together, timed from the epoch's start to the last read-back.
    images_per_sec = [r["train/images_per_sec"] for r in rows]
    assert 8 / elapsed <= 8 / sum(4 / v for v in images_per_sec) <= 8 / 0.8


# -- DDP: the collectives of a training step --------------------------------------------------
def _count_all_reduces(rank: int, folder: str, photos: str, world_size: int = 2) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    calls = []
    original = dist.all_reduce

    def counting(*args, **kwargs):
        calls.append(trainer.global_step)
        return original(*args, **kwargs)

    dist.all_reduce = counting  # the trainer's own collectives (DDP's gradient buckets go through C++)
    try:
        data = FolderDataModule(photos, image_size=32, batch_size=1, num_workers=0, val_fraction=0.0)
        trainer = Trainer(device="cpu", progress_bar=False, log_every_n_steps=3)
        recipe = tiny_pix2pix()
        trainer.setup(recipe)
        trainer.nets.wrap(trainer.device, False, False)
        trainer.data, trainer.logger = data, Rows()
        loader = data.train_loader(rank=rank, world_size=world_size)
        loader.sampler.set_epoch(0)
        finished = trainer.train_epoch(loader, "adversarial", 0)
        wrappers = trainer.nets.wrappers
        result = {
            "finished": finished, "steps": trainer.global_step, "calls": calls,
            "bucket_view": all(w.gradient_as_bucket_view for w in wrappers.values()),
            "broadcast": {name: w.broadcast_buffers for name, w in wrappers.items()},
        }
        torch.save(result, f"{folder}/rank{rank}.pt")
    finally:
        dist.all_reduce = original
        dist.destroy_process_group()


def test_ddp_steps_make_no_collective_outside_log_steps(tmp_path, small_photo_folder):
    # Forked: the children start with everything imported (a spawned pair would import torch again).
    mp.start_processes(_count_all_reduces, args=(str(tmp_path), str(small_photo_folder)), nprocs=2, start_method="fork")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for result in results:
        assert result["finished"] and result["steps"] == 4, result  # 8 photos, 4 per rank, batch 1
        # At step 3 (a log step): the non-finite check and the stop vote; at the epoch's end, one more vote.
        assert result["calls"] == [3, 3, 4], result
        assert result["bucket_view"]
        # The U-Net and PatchGAN have BatchNorm: their running statistics follow rank 0's.
        assert result["broadcast"] == {"generator": True, "discriminator": True}


# -- compile and the gradient penalty ---------------------------------------------------------
def test_compile_leaves_stargans_penalised_critic_eager():
    cfg = shrink(compose("model=stargan"))
    recipe = build_recipe(cfg)
    assert isinstance(recipe, StarGAN) and recipe.lambda_gp > 0
    trainer = Trainer(device="cpu", progress_bar=False, compile=True)
    trainer.setup(recipe)  # compilation itself is lazy: nothing is compiled before a step
    assert recipe.G._compiled_call_impl is not None
    assert recipe.D._compiled_call_impl is None


def test_cyclegans_generators_stay_compiled_through_all_their_input_kinds(monkeypatch, photos):
    """Dynamo caches graphs per Python function: G_AB and G_BA share ResnetGenerator.forward
    and, at torch's default of 8 graphs, one epoch's input kinds (1- and 3-channel inputs,
    fakes that require grad and photos that do not, validation in eval mode, a smaller last
    batch) pushed them past it, to eager for the rest of the run."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from gancolor import color
    from gancolor.models.cyclegan import CycleGAN
    from gancolor.nets import ResnetGenerator
    from helpers import crops

    # The compiler backend is not under test (dynamo's guards and cache are); "eager" runs
    # them without inductor's C++ builds.
    plain_compile = nn.Module.compile
    monkeypatch.setattr(nn.Module, "compile", lambda self, mode=None: plain_compile(self, backend="eager"))
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    recipe = CycleGAN(
        generator=lambda **kw: ResnetGenerator(ngf=4, n_blocks=1, image_size=16, **kw),
        discriminator=lambda **kw: PatchDiscriminator(ndf=4, n_layers=1, norm="instance", **kw),
        loss={"gan_mode": "lsgan", "lambda_cycle": 10.0, "lambda_identity": 0.5, "identity_mode": "unpaired"},
        color_space="lab",
        pool_size=0,
    )
    trainer = Trainer(device="cpu", progress_bar=False, compile=True)
    trainer.setup(recipe)
    assert torch._dynamo.config.recompile_limit == 16, "two generators and two discriminators of one class each"
    try:
        batch = {"A": color.to_gray(crops(photos[:2], 16)), "B": crops(photos[2:4], 16)}
        trainer.train_iteration(recipe.adversarial_steps(), batch, 0)
        recipe.eval()
        with torch.no_grad():
            L = color.batch_to_lab(crops(photos[:2], 16))[0]
            recipe.colorize(L), recipe.colorize(L[:1])
        recipe.train()
        trainer.train_iteration(recipe.adversarial_steps(), {k: v[:1] for k, v in batch.items()}, 1)
        assert counters["frames"]["ok"] == counters["frames"]["total"], "a net fell back to eager"
        graphs = torch._dynamo.eval_frame._debug_get_cache_entry_list(ResnetGenerator.forward.__code__)
        assert len(graphs) > 8, "the two generators' input kinds need more graphs than torch's default of 8"
    finally:
        torch._dynamo.reset()


def test_gradient_penalty_under_fp16_keeps_small_gradients_at_the_loss_scale():
    # A critic (one score per image) whose input gradient, 1e-4 per pixel, passes through
    # 1e-8 on its way back: below fp16's smallest number, unless the backward runs at
    # the GradScaler's scale.
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 1, 1, bias=False))
    with torch.no_grad():
        for conv, weight in zip(net, (1e4, 1e-4, 1e-4)):
            conv.weight.fill_(weight)

    def critic(x):
        return net(x).sum((1, 2, 3))

    real, fake = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    true = (1e-4 * 8 - 1.0) ** 2  # the gradient's norm: sqrt(64 pixels) x 1e-4
    with torch.autocast("cpu", dtype=torch.float16):
        unscaled = gradient_penalty(critic, real, fake)
        scaled = gradient_penalty(critic, real, fake, torch.tensor(2.0**16))
    assert unscaled.item() == 1.0  # every gradient flushed to zero
    assert scaled.item() == pytest.approx(true, rel=1e-5)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(true, rel=1e-5)  # fp32


def test_fp16_training_hands_stargan_the_loss_scale(one_thread):
    cfg = shrink(compose("model=stargan", "trainer.precision=16-mixed"))
    recipe = build_recipe(cfg)
    trainer = Trainer(device="cpu", progress_bar=False, precision="16-mixed")
    trainer.setup(recipe)
    seen = []
    step = recipe.discriminator_step

    def recording(batch, state):
        seen.append(float(state["loss_scale"]))  # (a CPU tensor: no sync to worry about)
        return step(batch, state)

    recipe.discriminator_step = recording
    torch.manual_seed(0)
    batch = {"image": torch.rand(2, 3, 32, 32), "domain": torch.tensor([0, 1])}
    for iteration in range(6):
        logs = trainer.train_iteration(recipe.adversarial_steps(), batch, iteration)
    # The scaler's scale as each D step ran: the initial one, then its device tensor,
    # halved after any step with an inf gradient (the penalty's included), never raised here.
    assert seen[0] == 2.0**16 and len(seen) == 6
    assert all(b in (a, a / 2) for a, b in zip(seen, seen[1:])), seen
    assert torch.isfinite(logs["D/gp"]) and logs["D/gp"] > 0
