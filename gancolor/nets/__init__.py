"""Networks: the pix2pix U-Net and the CycleGAN ResNet generators, the PatchGAN
discriminator, StarGAN's conditional generator and two-headed discriminator, the
timm-encoder Dynamic U-Net and Zhang et al.'s CIC classification net."""

from gancolor.nets.cic import CICNet
from gancolor.nets.dynamic_unet import DynamicUNet
from gancolor.nets.layers import init_weights
from gancolor.nets.patchgan import PatchDiscriminator
from gancolor.nets.resnet import ResnetGenerator
from gancolor.nets.stargan import StarGANDiscriminator, StarGANGenerator
from gancolor.nets.unet import UNetGenerator

__all__ = [
    "CICNet",
    "DynamicUNet",
    "PatchDiscriminator",
    "ResnetGenerator",
    "StarGANDiscriminator",
    "StarGANGenerator",
    "UNetGenerator",
    "init_weights",
]
