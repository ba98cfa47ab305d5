"""emcore — the engine of the EM denoising workbench (no Streamlit import here).

Public entry points: :class:`Dataset`, :func:`emcore.io.load`, :func:`emcore.io.save`,
:mod:`emcore.sim`, noise models in :mod:`emcore.noise`, :class:`EmcoreError`.
"""

from emcore.data.dataset import Calibration, Dataset
from emcore.errors import EmcoreError, TooLargeError

__all__ = ["Calibration", "Dataset", "EmcoreError", "TooLargeError"]
__version__ = "0.1.0"
