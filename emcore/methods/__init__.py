"""Denoising methods: plain array functions, and their registry entries.

Importing this package registers the built-in methods (see :mod:`emcore.registry`). A new
method adds one module with a ``register(Method(...))`` entry and one import line here.
"""

from . import classical  # noqa: F401  (registers bm3d, wiener, pca)
