"""What the Learn page shows about the methods: one section per registered method.

Each method's teaching text and live figure live with the method itself
(:attr:`emcore.methods.registry.Method.lesson`, a :class:`~emcore.methods.lesson.Lesson`); this
module only lists them for the page and builds a figure by name, so a new method appears on the
Learn page by being registered. The figures are descriptions (:class:`LessonFigure`), drawn by
the page.

No Streamlit here; the page caches what these functions return.
"""

from __future__ import annotations

from emcore.methods.lesson import (
    EXAMPLE_DOSE,
    Box,
    Curve,
    Lesson,
    LessonFigure,
    Panel,
    example_image,
    spectrum_example,
)
from emcore.methods.registry import Method, get_method, methods

__all__ = ["EXAMPLE_DOSE", "Box", "Curve", "Lesson", "LessonFigure", "Panel", "example_image", "figure",
           "sections", "spectrum_example"]


def sections() -> list[Method]:
    """The methods of the Learn page, in registry order (those without a lesson included)."""
    return methods()


def figure(name: str) -> LessonFigure | None:
    """The live figure of method ``name``'s lesson, or None when its lesson has none."""
    lesson = get_method(name).lesson
    return lesson.figure() if lesson is not None and lesson.figure is not None else None
