"""Data: image files -> augmented uint8 RGB batches -> (L, ab) on the device.

Files are decoded with PIL (EXIF orientation applied) and augmented with
albumentations in DataLoader workers; batches stay uint8 RGB until `lab_batch` moves
them to the device and converts them with gancolor.color, the only place colour
spaces are converted.
"""

from gancolor.data.datamodule import AlignedData, FolderData, SampleData, lab_batch, seed_worker, seeded_split
from gancolor.data.datasets import AlignedDataset, ColorImageDataset
from gancolor.data.domains import DomainImageDataset, DomainsData
from gancolor.data.images import (
    GRAY_TOLERANCE,
    IMAGE_EXTENSIONS,
    UnreadableImage,
    find_images,
    is_grayscale,
    load_rgb,
)
from gancolor.data.scan import ScanResult, scan_color_images
from gancolor.data.transforms import eval_transform, train_transform
from gancolor.data.unpaired import UnpairedData, UnpairedDataset

__all__ = [
    "GRAY_TOLERANCE",
    "IMAGE_EXTENSIONS",
    "AlignedData",
    "AlignedDataset",
    "ColorImageDataset",
    "DomainImageDataset",
    "DomainsData",
    "FolderData",
    "SampleData",
    "ScanResult",
    "UnpairedData",
    "UnpairedDataset",
    "UnreadableImage",
    "eval_transform",
    "find_images",
    "is_grayscale",
    "lab_batch",
    "load_rgb",
    "scan_color_images",
    "seed_worker",
    "seeded_split",
    "train_transform",
]
