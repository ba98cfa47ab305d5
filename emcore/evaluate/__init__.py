"""Judging a result: metrics with a ground truth (:mod:`~emcore.evaluate.reference`) and
without one (count splitting, frame pairs, residual checks, Fourier ring correlation),
intensity profiles, the network filter view, the offline report and the benchmark table.

Metric modules depend only on arrays; :mod:`~emcore.evaluate.validation` runs registered
methods on split data, so it sits above the method registry.
"""

from emcore.evaluate.reference import EXPLANATIONS, psnr, ssim

__all__ = ["EXPLANATIONS", "psnr", "ssim"]
