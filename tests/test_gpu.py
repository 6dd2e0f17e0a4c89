"""CUDA paths: run on a GPU machine (`pytest -m gpu`); skipped where there is no CUDA.
Their CPU counterparts (bf16/fp16 steps, DDP with gloo) run everywhere."""

import pytest
import torch

from gancolor.models.pix2pix import Pix2Pix
from gancolor.nets import PatchDiscriminator, UNetGenerator
from gancolor.trainer import Trainer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_iteration_with_channels_last(precision, compile):
    torch.manual_seed(0)
    recipe = Pix2Pix(UNetGenerator(ngf=16, image_size=64), PatchDiscriminator(ndf=16), {"gan_mode": "vanilla", "lambda_L1": 100.0})
    trainer = Trainer(device="cuda", precision=precision, channels_last=True, compile=compile, progress_bar=False)
    trainer.setup(recipe)
    batch = {
        "L": (torch.rand(8, 1, 64, 64, device="cuda") * 2 - 1).contiguous(memory_format=torch.channels_last),
        "ab": (torch.rand(8, 2, 64, 64, device="cuda") - 0.5).contiguous(memory_format=torch.channels_last),
    }
    before = [p.detach().clone() for p in recipe.generator.parameters()]
    for step in range(20):  # fp16's GradScaler may skip its first steps
        logs = trainer.train_iteration(recipe.adversarial_steps(), batch, step)
    assert all(torch.isfinite(v).all() for v in logs.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, recipe.generator.parameters()))
    assert all(p.device.type == "cuda" for p in recipe.parameters())
