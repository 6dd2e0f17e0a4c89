"""Networks: the pix2pix U-Net generator and the PatchGAN discriminator."""

from gancolor.nets.layers import init_weights
from gancolor.nets.patchgan import PatchDiscriminator
from gancolor.nets.unet import UNetGenerator

__all__ = ["PatchDiscriminator", "UNetGenerator", "init_weights"]
