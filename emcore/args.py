"""Command-line argument types shared by ``python -m emcore`` and its ``batch`` command."""

from __future__ import annotations

import argparse

from emcore.errors import EmcoreError

# Seeds go to numpy and torch generators, which take 64-bit values.
SEED_MAX = 2**63 - 1


def seed(text: str) -> int:
    """``--seed``: a whole number from 0 to 2⁶³ − 1."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"the seed must be a whole number from 0 to {SEED_MAX} (2⁶³ − 1), "
                                         f"not {text!r}")
    return value


def parse_sets(pairs: list[str] | None) -> dict:
    """``--set name=value`` options (repeatable) as a dict of strings; the method checks them."""
    params = {}
    for item in pairs or []:
        if "=" not in item:
            raise EmcoreError(f"--set takes name=value, not {item!r}.")
        k, v = item.split("=", 1)
        params[k.strip()] = v.strip()
    return params
