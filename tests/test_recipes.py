"""Every recipe, conf/model/*.yaml (found by globbing: a new one is covered without being
listed here), composed as the command line composes it, with tiny nets: one iteration
of each phase it has, run by the trainer's own iteration. In every step the nets the
step's optimiser trains move, the others stay as they were, and no gradient reaches a
net the step freezes. Then its checkpoint loads and colourises a gray image."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gancolor import color
from gancolor.build import build, build_recipe
from gancolor.checkpoint import load_recipe
from gancolor.inference import Colorizer
from helpers import CONF_DIR, compose, crops, phase_steps, same, save_checkpoint, shrink, snapshot

PHASES = ("pretrain", "critic", "adversarial")
# Each recipe with its defaults, and with settings that give it nets its defaults leave out.
CASES = {name: (name, []) for name in sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))}
CASES["cic-with-gan"] = ("cic", ["loss.lambda_gan=0.1"])


pytestmark = pytest.mark.usefixtures("one_thread")


def compose_recipe(name: str, folder, extra: list[str]):
    cfg = compose(f"model={name}", *extra)
    # Every recipe trains on the photos the test wrote: through its own data module when
    # that takes a folder, through data=folder when it reads the sample photos.
    data = [] if "root" in cfg.data.keys() else ["data=folder"]
    return shrink(compose(f"model={name}", *extra, *data, f"data.root={folder}"))


def nets(recipe) -> dict[str, nn.Module]:
    return {name: net for name, net in recipe.named_children() if any(True for _ in net.parameters())}


def weights_and_grads(recipe) -> dict[str, tuple[list, list]]:
    return {
        name: (snapshot(net), [None if p.grad is None else p.grad.clone() for p in net.parameters()])
        for name, net in nets(recipe).items()
    }


def same_grads(a: list, b: list) -> bool:
    return all((x is None and y is None) or (x is not None and y is not None and torch.equal(x, y)) for x, y in zip(a, b))


def recording(recipe, steps, log: list) -> list:
    """`steps`, each noting the weights and gradients of every net as it starts."""

    def record(step):
        def fn(batch, state):
            log.append((step, weights_and_grads(recipe)))
            return step.fn(batch, state)

        return dataclasses.replace(step, fn=fn)

    return [record(step) for step in steps]


def check_step(recipe, optimizer, step, before: dict, after: dict) -> None:
    owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trained = {name for name, net in nets(recipe).items() if any(id(p) in owned for p in net.parameters())}
    assert set(step.frozen) <= set(nets(recipe)), f"step {step.name} freezes nets the recipe does not have: {step.frozen}"
    assert not trained & set(step.frozen), f"step {step.name} freezes nets its own optimiser trains"
    assert trained, f"optimiser {step.optimizer} of step {step.name} trains none of the recipe's nets"
    for name, (weights, grads) in before.items():
        weights_after, grads_after = after[name]
        if name in trained:
            assert not same(weights, weights_after), f"step {step.name} did not train {name}"
        else:
            assert same(weights, weights_after), f"step {step.name} changed {name}, which optimiser {step.optimizer} does not train"
        if name in step.frozen:
            assert same_grads(grads, grads_after), f"gradients reached {name}, which step {step.name} freezes"


def endless(loader):
    while True:
        yield from loader


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_phase_trains_what_it_should_and_the_checkpoint_colorizes(case, small_photo_folder, photos, tmp_path):
    name, extra = CASES[case]
    cfg = compose_recipe(name, small_photo_folder, extra)
    torch.manual_seed(0)
    recipe = build_recipe(cfg)
    trainer, data = build(cfg.trainer, "trainer"), build(cfg.data, "data")
    data.setup()
    # What Trainer.fit does before its first iteration, without its loop, logs and files.
    trainer.run_dir, trainer.data = tmp_path, data
    trainer.setup(recipe)
    recipe.on_fit_start(trainer)
    recipe.train()

    batches = endless(data.train_loader())
    iteration, phases = 0, []
    for phase in PHASES:
        steps = phase_steps(recipe, phase)
        if steps is None:
            continue
        phases.append(phase)
        ran: set[str] = set()
        # Steps with every > 1 (StarGAN's G) run on some iterations only: go on until each has run.
        for _ in range(2 * max(step.every for step in steps)):
            log: list = []
            trainable = [p.requires_grad for p in recipe.parameters()]
            batch = data.device_batch(next(batches), trainer.device)
            trainer.train_iteration(recording(recipe, steps, log), batch, iteration)
            iteration += 1
            log.append((None, weights_and_grads(recipe)))
            for (step, before), (_, after) in zip(log, log[1:]):
                check_step(recipe, trainer.optimizers[step.optimizer], step, before, after)
                ran.add(step.name)
            assert [p.requires_grad for p in recipe.parameters()] == trainable, f"{phase}: a step left nets frozen"
            if ran == {step.name for step in steps}:
                break
        assert ran == {step.name for step in steps}, f"{phase}: steps that never ran: {sorted({s.name for s in steps} - ran)}"
    assert "adversarial" in phases

    path = save_checkpoint(tmp_path / "checkpoints" / "last.pt", cfg, recipe, epoch=1, global_step=iteration)
    loaded, _ = load_recipe(path)
    L, _ = color.rgb_to_lab_normalized(color.to_gray(crops(photos[:1], size=32)))
    ab = loaded.colorize(L)
    assert ab.shape == (1, 2, 32, 32) and torch.isfinite(ab).all()
    torch.testing.assert_close(ab, recipe.eval().colorize(L))  # the checkpoint holds the trained weights

    gray = np.asarray(Image.fromarray(photos[1]).convert("L").resize((56, 40)))
    colorizer = Colorizer(loaded, render_size=32)
    try:
        rgb = colorizer(gray)
    finally:
        colorizer.close()
    assert rgb.shape == (40, 56, 3) and rgb.dtype == np.uint8
