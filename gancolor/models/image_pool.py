"""A history of generated images for the discriminator (Shrivastava et al. 2017), as
CycleGAN uses it: "we update the discriminators using a history of generated images
rather than the ones produced by the latest generators ... an image buffer that
stores the 50 previously created images" (Zhu et al. 2017, sec. 4).

Until the buffer is full, each new fake is stored and passed through. Once full,
each new fake is, with probability 1/2, swapped into a random slot and the image it
displaces goes to the discriminator instead; otherwise it passes through unstored.

The pool is part of its recipe's checkpoint (stored fakes, fill count and its own
random state, through nn.Module's extra state), and draws only from its own
torch.Generator: resuming a run continues the exact same choices, and the global RNG
that seeds everything else is left untouched.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gancolor.errors import ConfigError


class ImagePool(nn.Module):
    def __init__(self, size: int = 50, seed: int = 0) -> None:
        super().__init__()
        if int(size) < 0:
            raise ConfigError(f"model.pool_size must be >= 0, got {size}")
        self.size = int(size)
        self.count = 0
        self.images: torch.Tensor | None = None  # (size, C, H, W), float32, allocated on first use
        self.generator = torch.Generator()
        self.generator.manual_seed(int(seed))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Fakes (N, C, H, W) in -> what the discriminator should see (N, C, H, W), float32."""
        images = images.detach().float()
        if self.size == 0:
            return images
        self._prepare(images)
        # Drawn on the CPU, a fixed amount per image whatever happens: the decisions
        # need no device sync, and the random stream does not depend on the outcome.
        swap = torch.rand(len(images), generator=self.generator) > 0.5
        slots = torch.randint(self.size, (len(images),), generator=self.generator).tolist()
        out: list[torch.Tensor] = []
        for image, do_swap, slot in zip(images, swap.tolist(), slots):
            if self.count < self.size:
                self.images[self.count] = image
                self.count += 1
                out.append(image)
            elif do_swap:
                out.append(self.images[slot].clone())
                self.images[slot] = image
            else:
                out.append(image)
        return torch.stack(out)

    def _prepare(self, images: torch.Tensor) -> None:
        shape = tuple(images.shape[1:])
        if self.images is None:
            self.images = torch.zeros((self.size, *shape), dtype=torch.float32, device=images.device)
        elif tuple(self.images.shape[1:]) != shape:
            raise ValueError(f"image pool holds {tuple(self.images.shape[1:])} images, got {shape}")
        elif self.images.device != images.device:
            # A pool restored from a checkpoint is loaded on the CPU; recipe.to() does not
            # move extra state.
            self.images = self.images.to(images.device)

    # -- checkpoint -----------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        stored = self.images[: self.count].clone() if self.images is not None else torch.zeros(0)
        return {"size": self.size, "count": self.count, "images": stored, "rng": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        stored = state["images"]
        self.count = min(int(state["count"]), self.size)
        self.images = None
        if self.count:
            self.images = torch.zeros((self.size, *stored.shape[1:]), dtype=torch.float32, device=stored.device)
            self.images[: self.count] = stored[: self.count]
        self.generator.set_state(state["rng"])

    def extra_repr(self) -> str:
        return f"size={self.size}, count={self.count}"
