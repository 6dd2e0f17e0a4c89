"""What the training benchmarks share: the repository on sys.path, Hydra composition of
conf/, and the chips' dense bf16 peak for MFU."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Dense bf16 peak, FLOP/s: the H200 figure was measured on this workplace's machine (a large
# bf16 matmul, ~790 TFLOP/s); the others are datasheet figures (no sparsity).
PEAK_BF16 = {"H200": 790e12, "H100": 989e12, "A100": 312e12, "L4": 121e12}


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def device_peak(device: torch.device) -> float | None:
    """The bf16 peak of a CUDA device from the table, None elsewhere or for an unknown chip."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)
