"""The data model (:class:`Dataset`, :class:`Calibration`), display helpers and frame registration."""

from emcore.data.dataset import Calibration, Dataset

__all__ = ["Calibration", "Dataset"]
