"""Denoising networks as plain ``torch.nn.Module``s on ``[B, C, H, W]`` tensors.

Every model class listed in ``__all__`` follows one contract (checked by
``tests/models/test_models.py``): ``forward(x)`` keeps the spatial size for any input size,
``config()`` returns the constructor arguments and ``from_config(d)`` rebuilds the module
from them (for checkpoints: config + state dict), ``receptive_field()`` gives the side
length in input pixels seen by one output pixel, and ``PARAM_RANGES`` declares the
accepted range of each integer argument (out-of-range values raise ``ValueError``).
"""

from .dncnn import BiasFreeBatchNorm2d, DnCNN
from .unet import UNet

__all__ = ["DnCNN", "UNet"]

# Building block, importable from here but not a model: kept out of ``__all__`` so that
# the model contract test does not pick it up.
BiasFreeBatchNorm2d = BiasFreeBatchNorm2d
