"""gancolor: GANs that colourise black-and-white photographs.

pix2pix, CycleGAN, StarGAN and Zhang et al.'s classification model are recipes
(gancolor.models) over one trainer (gancolor.trainer), composed with Hydra (conf/).
"""

import os

__version__ = "0.1.0"

# albumentations asks PyPI for a newer version at import; gancolor makes no network
# calls at run time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
