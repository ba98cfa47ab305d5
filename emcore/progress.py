"""Progress reporting for long work, without any UI import (see ``shared/STYLE.md``).

Long functions take ``progress: Callable[[Progress], None] | None`` and
``should_stop: Callable[[], bool] | None``. The app runs them in a worker thread and polls;
the CLI prints; tests record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping


@dataclass(frozen=True)
class Progress:
    """One progress report.

    Attributes
    ----------
    step, total : int
        Units of work done and planned (slices, frames, training steps...).
    losses, metrics : mapping of str to float
        Latest training losses / validation metrics, when there are any.
    elapsed : float
        Seconds since the work started.
    eta : float or None
        Estimated seconds left.
    message : str
        A short line for a person ("slice 12 of 1024").
    """

    step: int
    total: int
    losses: Mapping[str, float] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    elapsed: float = 0.0
    eta: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total > 0 else 0.0


ProgressFn = Callable[[Progress], None]
StopFn = Callable[[], bool]


def report(progress: ProgressFn | None, step: int, total: int, t0: float, message: str = "") -> None:
    """Send a :class:`Progress` with elapsed time and ETA measured from ``t0`` (``perf_counter``)."""
    if progress is None:
        return
    import time

    elapsed = time.perf_counter() - t0
    eta = elapsed / step * (total - step) if step > 0 and total >= step else None
    progress(Progress(step=step, total=total, elapsed=elapsed, eta=eta, message=message))
