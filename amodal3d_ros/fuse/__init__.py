"""Fusion of all views into per-object evidence grids (observed surface, free, unknown)."""
from .evidence import CHANNELS, EvidenceGrid, fuse_object

__all__ = ["CHANNELS", "EvidenceGrid", "fuse_object"]
