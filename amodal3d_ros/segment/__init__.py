"""Segmentation: the support surface, the objects on it, the targets and what occludes them."""
from __future__ import annotations

from ..config import SegmentConfig
from .base import SceneSegmentation, SegmentedObject, Segmenter, TargetNotFoundError
from .depth import DepthSegmenter

__all__ = ["DepthSegmenter", "SceneSegmentation", "SegmentedObject", "Segmenter", "TargetNotFoundError",
           "make_segmenter"]


def make_segmenter(config: SegmentConfig, device: str = "cpu") -> Segmenter:
    if config.method == "depth":
        return DepthSegmenter(config)
    if config.method == "sam":
        from .sam import SamSegmenter

        return SamSegmenter(config, device=device)
    raise ValueError(f"unknown segmentation method '{config.method}' (choose depth or sam)")
