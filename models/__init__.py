"""Denoising networks as plain ``torch.nn.Module``s on ``[B, C, H, W]`` tensors.

Every model class listed in ``__all__`` follows one contract, checked for all of them by
``tests/models/test_models.py``:

- ``forward(x)`` keeps the spatial size for any input size and any float dtype, and runs
  under ``torch.autocast(..., dtype=torch.bfloat16)``;
- ``config()`` returns the constructor arguments (JSON-serialisable) and the classmethod
  ``from_config(d)`` rebuilds the module from them, so a checkpoint is config + state dict;
  unknown keys raise ``ValueError``;
- ``PARAM_RANGES`` declares the accepted range of each integer argument; values outside it
  raise ``ValueError``;
- ``receptive_field()`` gives the side length in input pixels seen by one output pixel;
- models with a ``residual`` option call their last layer ``head``;
- the class docstring quotes parameter counts as ``Name(...)``: N parameters (in double
  backticks) including the default config, and the default receptive field in px.
"""

from .dcae3d import (
    DCAE3D as DCAE3D,  # 3-D [B, C, E, H, W]: outside the 2-D contract list below
)
from .dncnn import (
    BiasFreeBatchNorm2d as BiasFreeBatchNorm2d,  # building block, not a model
)
from .dncnn import DnCNN
from .noise2sr import (
    Noise2SR as Noise2SR,  # output is s× the input: outside the size contract
)
from .unet import UNet

# Models only: the contract test is parametrised over this list.
__all__ = ["DnCNN", "UNet"]
