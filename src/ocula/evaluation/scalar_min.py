"""The minimum of a function of one variable on an interval: the temperature fits (log T) need nothing more.

Golden-section search: ~38 evaluations take [log 0.05, log 20] to 1e-7, which keeps scipy out of the core install.
"""
from __future__ import annotations

import math
from typing import Callable

INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618...: the kept share of the bracket per step


def minimise_bounded(f: Callable[[float], float], lo: float, hi: float, xatol: float = 1e-7) -> float:
    """The minimiser of a unimodal `f` on [lo, hi] to within `xatol`; a function still falling at a bound
    ends there, so that bound is returned itself (callers read "at the bound" as "no interior optimum")."""
    if not lo < hi:
        raise ValueError(f"empty interval [{lo}, {hi}]")
    a, b = lo, hi
    c, d = b - INV_PHI * (b - a), a + INV_PHI * (b - a)
    fc, fd = f(c), f(d)
    while b - a > xatol:
        if fc <= fd:  # the minimum is in [a, d]: d becomes the bracket's end, c its new inner point
            b, d, fd = d, c, fc
            c = b - INV_PHI * (b - a)
            fc = f(c)
        else:  # the minimum is in [c, b]
            a, c, fc = c, d, fd
            d = a + INV_PHI * (b - a)
            fd = f(d)
    best, f_best = (c, fc) if fc <= fd else (d, fd)
    for edge in (lo, hi):
        f_edge = f(edge)
        if f_edge <= f_best:
            best, f_best = edge, f_edge
    return best
