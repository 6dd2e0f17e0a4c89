"""What a recipe is, and what the trainer may ask of it.

A recipe owns its nets and optimisers and says what ONE training iteration is, as an
ordered list of `Step`s. Each step computes a loss for one optimiser; the trainer does
the rest for every recipe alike: autocast, backward (with a GradScaler for fp16),
optimiser.step, freezing the nets a step names in `frozen`, LR schedules, DDP,
logging, checkpoints. A recipe never touches devices, precision, epochs or files.

Steps of one iteration share a `state` dict, so the generator's output made for the
discriminator step is reused by the generator step (as in the reference pix2pix,
which runs G once per iteration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

# What a step function gets: the batch (L, ab, ... as tensors on the device) and the
# iteration's shared state. It returns the loss to minimise and detached values to log.
StepFn = Callable[[dict, dict], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass(frozen=True)
class Step:
    name: str  # short, used as the log prefix: "G", "D", ...
    fn: StepFn
    optimizer: str  # key in the dict configure_optimizers returns
    frozen: tuple[str, ...] = field(default_factory=tuple)  # nets held fixed (requires_grad False)
    every: int = 1  # run when (iteration + 1) % every == 0: as yunjey/stargan, G after n_critic D steps, never first


class Recipe(nn.Module):
    """Base class: subclasses set `name`, build nets in __init__ and implement the hooks."""

    name: str = "recipe"
    # What the generator is given: "gray" (normalised L; it predicts ab) or "nir" (a
    # near-infrared image; it predicts the whole colour image). The data module must
    # give the same (check_input_kind).
    input_kind: str = "gray"

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Called by the trainer once the nets are on their device."""
        raise NotImplementedError

    def pretrain_steps(self) -> list[Step]:
        """Phase 1: the generator alone on its supervised loss (a pixel loss for pix2pix,
        the rebalanced cross-entropy over ab bins for CIC), before any discriminator."""
        raise NotImplementedError

    def critic_steps(self) -> list[Step]:
        """Optional phase between the two: the discriminator alone against the frozen,
        pretrained generator (DeOldify's NoGAN critic pretraining)."""
        raise NotImplementedError(f"{self.name} has no critic-pretraining phase: set trainer.critic_pretrain_epochs=0")

    def adversarial_steps(self) -> list[Step]:
        """Phase 3: the adversarial alternation, in order."""
        raise NotImplementedError

    def on_fit_start(self, trainer) -> None:
        """Called once before training, nets already on `trainer.device`: a recipe that
        needs statistics of its training set (CIC's colour prior) computes them here from
        `trainer.data` and may cache them in `trainer.run_dir`."""

    @torch.no_grad()
    def colorize(self, L: torch.Tensor) -> torch.Tensor:
        """Normalised L (N, 1, H, W) -> predicted normalised ab (N, 2, H, W)."""
        raise NotImplementedError

    def generator_modules(self) -> list[nn.Module]:
        """The nets `colorize` needs; what a weights-only export keeps."""
        raise NotImplementedError

    def double_backward_nets(self) -> tuple[str, ...]:
        """Attribute names of the nets a step differentiates twice (a gradient penalty's
        create_graph): torch.compile leaves them eager, as it has no double backward."""
        return ()

    def generator_names(self) -> tuple[str, ...]:
        """Attribute names of the generators: the nets model.ema_decay averages. By
        default those of `generator_modules`; a recipe with a generator that colorize
        does not use (CycleGAN's G_BA) lists it too. Ask with the nets unwrapped."""
        wanted = {id(m) for m in self.generator_modules()}
        return tuple(name for name, child in self.named_children() if id(child) in wanted)


def adam(net_or_params, lr: float, beta1: float, beta2: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam over a net's parameter groups. A net may define `param_groups(lr)` to give
    parts of itself their own learning rate (a pretrained encoder trains slower)."""
    if isinstance(net_or_params, nn.Module):
        groups = net_or_params.param_groups(lr) if hasattr(net_or_params, "param_groups") else net_or_params.parameters()
    else:
        groups = net_or_params
    groups = [{**g, "params": list(g["params"])} if isinstance(g, dict) else g for g in groups]
    optimizer = torch.optim.Adam(groups, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay, **adam_kernel(groups))
    # A checkpoint's param groups carry the kernel of the machine that saved them
    # (resumed on another device they would run a slow or unsupported one): choose again.
    optimizer.register_load_state_dict_post_hook(_choose_kernel_again)
    return optimizer


def _choose_kernel_again(optimizer: torch.optim.Optimizer) -> None:
    kernel = {"fused": None, "foreach": None, **adam_kernel(optimizer.param_groups)}
    for group in optimizer.param_groups:
        group.update(kernel)


def adam_kernel(groups) -> dict[str, bool]:
    """The fastest Adam implementation for where the parameters live (the trainer moves
    the nets before it asks for optimisers): on CUDA the fused kernel, one launch for
    every parameter, whose step also reads a GradScaler's inf check on the device (no
    `.item()` per step); elsewhere the multi-tensor (foreach) one."""
    params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    if params and all(p.is_cuda and p.is_floating_point() for p in params):
        return {"fused": True}
    return {"foreach": True}


def check_input_kind(recipe: Recipe, data) -> None:
    """A recipe and a data module that disagree on the input fail before any work, with
    one line, instead of a KeyError in the first step (the command line is checked for
    the same before Hydra starts: gancolor.config_check.input_kind_problem)."""
    from gancolor.config_check import input_kind_message
    from gancolor.errors import ConfigError

    wanted, given = getattr(recipe, "input_kind", "gray"), getattr(data, "input_kind", "gray")
    if wanted != given:
        raise ConfigError(input_kind_message(recipe.name, getattr(recipe, "target", None), given))