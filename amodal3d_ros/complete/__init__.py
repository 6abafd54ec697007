"""Amodal completion: evidence grid in, occupancy of the whole object out."""
from __future__ import annotations

from ..config import CompleteConfig
from .base import Completer, resample
from .classical import CLASSICAL
from .constraints import constrain, constraint_grid, observed_occupancy

__all__ = ["Completer", "constrain", "constraint_grid", "make_completer", "observed_occupancy", "resample", "METHODS"]

METHODS = ("learned", *CLASSICAL)


def make_completer(config: CompleteConfig, device: str = "cpu") -> Completer:
    """The completer named by ``config.method`` (learned models load their weights here)."""
    if config.method in CLASSICAL:
        return CLASSICAL[config.method]()
    if config.method == "learned":
        from .learned import LearnedCompleter

        return LearnedCompleter(config.weights or None, device=device, rotations=config.rotations)
    raise ValueError(f"unknown completion method '{config.method}' (choose from {', '.join(METHODS)})")
