"""Denoising methods: plain array functions, and their registry entries.

Importing this package registers the built-in methods (see :mod:`emcore.registry`). A new
method adds one module with a ``register(Method(...))`` entry and one import line here.
"""

from . import classical  # noqa: F401  (registers bm3d, wiener, pca)
from . import supervised  # noqa: F401  (registers dncnn, unet)
from . import self_supervised  # noqa: F401  (registers noise2sr, noise2self)
from . import dcae3d  # noqa: F401  (registers dcae3d)
