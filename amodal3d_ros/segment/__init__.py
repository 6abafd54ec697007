"""Segmentation: the support surface, the objects on it, the targets and what occludes them."""
from __future__ import annotations

from ..config import SegmentConfig
from .base import SceneSegmentation, SegmentedObject, Segmenter, TargetNotFoundError
from .depth import DepthSegmenter
from .rgb import SilhouetteSegmenter

__all__ = ["DepthSegmenter", "SceneSegmentation", "SegmentedObject", "Segmenter", "SilhouetteSegmenter",
           "TargetNotFoundError", "make_rgb_only_segmenter", "make_segmenter"]


def make_segmenter(config: SegmentConfig, device: str = "cpu") -> Segmenter:
    """The backend named by ``config.method``, for views with depth (segment-anything loads its model here)."""
    if config.method == "depth":
        return DepthSegmenter(config)
    if config.method == "sam":
        from .sam import SamSegmenter

        return SamSegmenter(config, device=device)
    raise ValueError(f"unknown segmentation method '{config.method}' (choose depth or sam)")


def make_rgb_only_segmenter(config: SegmentConfig, backend: Segmenter) -> SilhouetteSegmenter:
    """The segmenter of posed RGB-only views: silhouettes of regions cut by colour, or of the
    backend's region proposals where it has them (segment-anything's automatic masks)."""
    return SilhouetteSegmenter(config, region_masks=backend.region_masks)
