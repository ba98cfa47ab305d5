"""Denoising methods: one module per method, each holding its array function and its
registry entry (:func:`emcore.methods.registry.register`).

Importing this package (which importing :mod:`emcore.methods.registry` does first) registers
the built-in methods, in the order the app, the CLI and the Learn page list them (a baseline
before the method measured against it: Noise2Self, then Noise2SR).
"""

# isort: off
from emcore.methods import bm3d  # noqa: F401
from emcore.methods import wiener  # noqa: F401
from emcore.methods import pca  # noqa: F401
from emcore.methods import supervised  # noqa: F401  (dncnn, unet)
from emcore.methods import noise2self  # noqa: F401
from emcore.methods import noise2sr  # noqa: F401
from emcore.methods import dcae3d  # noqa: F401
from emcore.methods import auto  # noqa: F401  (ranks the others: registered last)
# isort: on
