"""Where the nets run and at what precision: one resolver and one table for training
and inference alike, so that a value means the same to every command."""

from __future__ import annotations

import contextlib

import torch

from gancolor.errors import ConfigError

# precision option -> autocast dtype (None: plain float32). 16-mixed also needs a
# GradScaler, which only training has.
PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16-mixed": torch.float16}
# Inference has no GradScaler, and fp16 without one is not worth offering.
INFERENCE_PRECISIONS = ("32", "bf16")


def resolve_device(name: str, key: str = "device") -> torch.device:
    """"auto" (CUDA when present), "cpu", "cuda" or "cuda:N", or a ConfigError naming `key`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{key} must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name} but CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{key} must be auto, cpu, cuda or cuda:N, got {name!r}")
    return device


def check_precision(value, key: str = "precision", allowed=tuple(PRECISIONS)) -> str:
    """`value` as a key of PRECISIONS, or a ConfigError naming `key`; `allowed` is the
    part of the table the caller supports."""
    if str(value) not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def autocast(device: torch.device, precision: str):
    """The autocast context of `precision` on `device` (none for full precision)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
