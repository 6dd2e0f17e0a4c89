"""gancolor: GANs that colourise black-and-white photographs.

pix2pix, CycleGAN, StarGAN and Zhang et al.'s classification model are recipes
(gancolor.models) over one trainer (gancolor.trainer), composed with Hydra (conf/).
"""

__version__ = "0.1.0"
