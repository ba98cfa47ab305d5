"""Shared test fixtures.

The real sample files live outside the repository (``../shared/data`` from the repo root,
see its MANIFEST.md); they are not copied in because their licences differ. Tests that need
them skip when the folder is absent — except on CI (``CI=true``), where a missing folder is a
broken setup and must fail loudly rather than silently skip the format coverage.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def require_shared_data() -> Path:
    """The shared data folder, or skip (fail on CI) when it is not there."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    reason = (
        f"shared sample data not found at {SHARED_DATA} (expected ../shared/data next to the "
        "repository); the real-file tests need it"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " — on CI this folder must be provided.")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``../shared/data`` (real EM sample files); skips, or fails on CI, if absent."""
    return require_shared_data()


def pickled_npy_bytes(objects) -> bytes:
    """An ``.npy`` file holding a pickled object array — what a malicious upload looks like.

    Built by hand (header + pickle payload) so that no test needs to enable pickle loading or
    saving in NumPy itself.
    """
    import io
    import pickle

    import numpy as np

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": (len(objects),)})
    pickle.dump(np.array(objects, dtype=object), buf, protocol=3)
    return buf.getvalue()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of tiny networks, restored afterwards: on a busy
    2-core machine two threads spend most of their time waiting for each other (measured 4 s
    instead of 4 ms for one small Noise2SR MMSE estimate)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
