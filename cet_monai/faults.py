"""Fault injection for the interruption tests (``tests/test_interruption.py``).

With ``CET_MONAI_FAULT=POINT:N`` in the environment, the process kills itself with SIGKILL (no
cleanup, no ``finally``: as a cluster's out-of-memory killer or a power cut would) the N-th time
it reaches ``fault_point(POINT)``. Points: ``iteration`` (a training iteration completed),
``checkpoint`` (a checkpoint about to be written), ``inference`` (a batch of windows about to be
denoised), ``output`` (the output volume written to its temporary file, not yet renamed). Without
the variable every call returns at once.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

__all__ = ["fault_point", "FAULT_ENV"]

FAULT_ENV = "CET_MONAI_FAULT"
_reached: Counter = Counter()


def fault_point(name: str) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
