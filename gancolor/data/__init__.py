"""Data: image files -> augmented uint8 RGB batches -> (L, ab) on the device.

Two kinds of object, named by one rule:

    *DataModule   what `data=` builds (conf/data/*.yaml): finds the files, scans and
                  splits them, builds the loaders and turns a batch into what a recipe's
                  steps receive. One family per module:
                      datamodule.py  the base: FolderDataModule (data=folder), which every
                                     data module extends, SampleDataModule (data=sample),
                                     and what the families share (SampleRootFallback:
                                     root=null means the sample photos; the seeded split)
                      aligned.py     AlignedDataModule   (data=aligned, pix2pix A|B files)
                      unpaired.py    UnpairedDataModule  (data=unpaired, CycleGAN)
                      domains.py     DomainsDataModule   (data=domains, StarGAN)
                      attributes.py  AttributesDataModule (data=attributes, StarGAN with
                                     CelebA-style multi-label attributes)
                      nir.py         NIRDataModule (data=nir, NIR/RGB pairs for a recipe
                                     that predicts the whole colour image from NIR)
    *Dataset      a torch Dataset: one item per index, built by a data module. All of
                  them live in datasets.py, except NIRDataset, which lives in nir.py
                  with the NIR decoding and pairing it shares with its data module.

The rest are the pieces both use: images.py (finding and decoding files), scan.py
(dropping grayscale and unreadable ones), transforms.py (augmentation), sampling.py
(the seeded, resumable epoch order).

Files are decoded with PIL (EXIF orientation applied) and augmented with
albumentations in DataLoader workers; batches stay uint8 RGB until `lab_batch` moves
them to the device and converts them with gancolor.color, the only place colour
spaces are converted.

The names without "Module" (FolderData, SampleData, AlignedData, UnpairedData,
DomainsData) are the data modules' names before this rule. Checkpoints and run configs
store the `_target_` they were trained with, so those names stay importable, as aliases,
from every path they had.
"""

from gancolor.data.aligned import AlignedDataModule
from gancolor.data.datamodule import (
    FolderDataModule,
    SampleDataModule,
    SampleRootFallback,
    lab_batch,
    seed_worker,
    seeded_split,
)
from gancolor.data.attributes import AttributesDataModule
from gancolor.data.datasets import (
    AlignedDataset,
    AttributesDataset,
    ColorImageDataset,
    DomainImageDataset,
    UnpairedDataset,
)
from gancolor.data.domains import DomainsDataModule
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
from gancolor.data.nir import NIRDataModule, NIRDataset
from gancolor.data.unpaired import UnpairedDataModule

# Old names (see the module docstring): gancolor.data.FolderData etc. are `_target_`s
# in checkpoints and run configs written before the *DataModule names.
FolderData = FolderDataModule
SampleData = SampleDataModule
AlignedData = AlignedDataModule
UnpairedData = UnpairedDataModule
DomainsData = DomainsDataModule

__all__ = [
    "GRAY_TOLERANCE",
    "IMAGE_EXTENSIONS",
    "AlignedData",
    "AlignedDataModule",
    "AlignedDataset",
    "AttributesDataModule",
    "AttributesDataset",
    "ColorImageDataset",
    "DomainImageDataset",
    "DomainsData",
    "DomainsDataModule",
    "FolderData",
    "FolderDataModule",
    "NIRDataModule",
    "NIRDataset",
    "SampleData",
    "SampleDataModule",
    "SampleRootFallback",
    "ScanResult",
    "UnpairedData",
    "UnpairedDataModule",
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
