"""Warnings the tracker gives while a model trains.

They are `RuntimeWarning`s, shown once where Python shows warnings; but a process that turns
warnings into errors (`python -W error`, a test suite's filter) must not have its training stopped
by one of ours, so there the message is printed to stderr instead of raised.
"""

from __future__ import annotations

import sys
import warnings


def warn(message: str, stacklevel: int = 2) -> None:
    try:
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)
    except Warning:
        print(f"RuntimeWarning: {message}", file=sys.stderr)
