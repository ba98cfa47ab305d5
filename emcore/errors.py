"""The one exception type for expected problems.

Anything a user can cause — a bad file, the wrong kind of data, an unknown method, data too
large for memory — raises :class:`EmcoreError` with a sentence a microscopist understands:
what was wrong, with which file, and what to do. The app shows ``str(err)``; the CLI prints it
and exits with status 2. Any other exception is a bug.
"""

from __future__ import annotations


class EmcoreError(Exception):
    """An expected problem, explained in one plain sentence (``str(err)``)."""


class TooLargeError(EmcoreError):
    """A dataset would not fit under the memory cap as it is.

    Carries what is needed to offer a reduction (spatial/energy binning or an energy crop)
    before anything is materialised.

    Attributes
    ----------
    shape : tuple of int
        Shape of the data as stored in the file.
    nbytes : int
        Bytes the data would take as float32.
    max_bytes : int
        The cap that was exceeded.
    suggestion : dict
        A reduction (``bin_spatial``, ``bin_energy``) that would fit under the cap.
    """

    def __init__(self, message: str, *, shape, nbytes: int, max_bytes: int, suggestion: dict):
        super().__init__(message)
        self.shape = tuple(int(s) for s in shape)
        self.nbytes = int(nbytes)
        self.max_bytes = int(max_bytes)
        self.suggestion = dict(suggestion)


class Stopped(EmcoreError):
    """The user asked a running method or training to stop."""
