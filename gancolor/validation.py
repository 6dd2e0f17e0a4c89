"""Validation during training: the shared image metrics over the validation set, and
a grid of sample images (gray | generated | truth) for each validated epoch.

Rank 0 alone validates, with the nets out of their DDP wrappers, so its forward
passes wait for no collective of the other ranks.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import defaultdict
from pathlib import Path

import torch

from gancolor.checkpoint import preserved_rng
from gancolor.color import gray_to_rgb, lab_normalized_to_rgb, nir_from_net
from gancolor.data import lab_batch
from gancolor.metrics import image_metrics, summarize

log = logging.getLogger("gancolor.trainer")  # train.log names these lines after the trainer that asks for them


@functools.cache
def metric_names() -> frozenset[str]:
    """The val/ keys validation logs (trainer.monitor must be one), found by scoring two
    tiny images, so that the list cannot drift from what gancolor.metrics computes."""
    images = torch.linspace(0, 1, 2 * 3 * 16 * 16).reshape(2, 3, 16, 16)
    return frozenset(f"val/{key}" for key in summarize(image_metrics(images, images.flip(0))))


@torch.no_grad()
def validate(trainer, loader, epoch: int, mid_epoch: bool = False) -> dict[str, float]:
    """The val/ metrics of `trainer.recipe` over `loader`, logged with the sample grid,
    with the generators' EMA weights where the run keeps them (trainer.val_use_ema).

    Training state stays as it was: every RNG is restored afterwards and each module
    gets back its own train/eval mode (BatchNorm statistics do not move in eval), so a
    run validated at a point a longer run is not (max_steps mid-epoch) trains on
    exactly as that longer run does. `mid_epoch`: the grid's name says the step too.
    """
    with trainer.nets.unwrapped(), trainer.weights_to_validate(), preserved_rng(), eval_mode(trainer.recipe):
        return _validate(trainer, loader, epoch, mid_epoch)


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def _validate(trainer, loader, epoch: int, mid_epoch: bool) -> dict[str, float]:
    recipe, logger, step = trainer.recipe, trainer.logger, trainer.global_step
    per_image: dict[str, list[torch.Tensor]] = defaultdict(list)
    rows: list[torch.Tensor] = []
    table: list[dict] = []  # the sample images with their own metrics (a W&B Table)
    for batch in loader:
        shown, pred, truth = _colourised(trainer, batch, trainer.num_samples - len(rows) // 3)
        values = {name: v.cpu() for name, v in image_metrics(pred, truth).items()}
        for name, v in values.items():
            per_image[name].append(v)
        for i in range(min(pred.shape[0], trainer.num_samples - len(rows) // 3)):
            gray = shown[i].cpu()
            rows += [gray, pred[i].cpu(), truth[i].cpu()]
            table.append({"gray": gray, "generated": pred[i].cpu(), "truth": truth[i].cpu(),
                          **{name: float(v[i]) for name, v in values.items() if v.dim() == 1}})
    if not per_image:  # an empty loader: nothing was validated
        return {}
    metrics = {f"val/{k}": v for k, v in summarize(per_image).items()}
    logger.log_metrics({**metrics, "epoch": epoch + 1}, step=step)
    if rows:
        name = f"epoch_{epoch + 1:04d}" + (f"_step_{step:08d}" if mid_epoch else "")
        path = Path(trainer.run_dir) / "samples" / f"{name}.png"
        try:
            save_samples(rows, path)
            logger.log_image("val/samples", path, step=step, caption="gray | generated | truth")
        except OSError as exc:  # a full disk must not end a long run over a picture
            log.warning("cannot write the sample grid %s (%s); training goes on", path, exc.strerror or exc)
        logger.log_validation_table(table, step=step)
    log.info(
        "epoch %d%s: val psnr %.2f dB, ssim %.3f, mae %.4f, colourfulness ratio %.2f",
        epoch + 1, f" (stopped at step {step}, inside the epoch)" if mid_epoch else "",
        metrics["val/psnr"], metrics["val/ssim"], metrics["val/mae"], metrics["val/colorfulness_ratio"],
    )
    return metrics


def _colourised(trainer, batch, shown: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(what the net was shown, for the first `shown` images; its colours; the truth) of a
    validation batch, as sRGB."""
    recipe = trainer.recipe
    if getattr(recipe, "input_kind", "gray") == "nir":
        # NIR input (model.target=lab / rgb): the net predicts the whole colour image.
        inputs = trainer.data.device_batch(batch, trainer.device)
        with trainer.autocast():
            out = recipe.colorize(inputs["nir"])
        return nir_from_net(inputs["nir"][: max(shown, 0)]), recipe.to_rgb(inputs["nir"], out.float()), inputs["rgb"]
    L, ab = lab_batch(batch, trainer.device)
    with trainer.autocast():
        fake_ab = recipe.colorize(L)
    return gray_to_rgb(L[: max(shown, 0)]), lab_normalized_to_rgb(L, fake_ab.float()), lab_normalized_to_rgb(L, ab)


def save_samples(rows: list[torch.Tensor], path: Path) -> Path:
    """Rows of (gray, generated, truth) images as one grid, three to a row."""
    from torchvision.utils import save_image  # imported late: only validation needs it

    save_image(torch.stack(rows), path, nrow=3, padding=2, pad_value=1.0)
    return path
