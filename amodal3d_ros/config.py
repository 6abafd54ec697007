"""The pipeline's settings: one dataclass per stage, nested in ``PipelineConfig``.

Declared with the schema of :mod:`amodal3d_ros.schema` (default, description, allowed values), so
the CLI (``--config``, ``--set fuse.voxels=48``), the ROS node (parameters ``pipeline.*``) and the
YAML files read them through the same loader and validator. Defaults live here only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .schema import ConfigError, Range, Schema, read_yaml, section, setting

__all__ = ["CompleteConfig", "ConfigError", "FuseConfig", "MeshConfig", "PipelineConfig", "PoseConfig",
           "SegmentConfig", "StereoConfig", "changed_settings"]

POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
COMPLETION_METHODS = ("learned", "extrusion", "hull", "visible")


def changed_settings(recorded: dict, wanted: dict, defaults: dict) -> list[str]:
    """Keys whose value in ``recorded`` (an older record of settings) differs from ``wanted``.

    A key the record lacks had its default then (new settings default to the old behaviour), so
    adding a setting does not orphan data made before it.
    """
    old, new = {**defaults, **recorded}, {**defaults, **wanted}
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


@dataclass
class SegmentConfig(Schema):
    method: str = setting("depth", "segmentation backend: depth (no weights) or sam (segment-anything, needs "
                          "sam_checkpoint)", choices=("depth", "sam"))
    sam_checkpoint: str = setting("", "path to a segment-anything vit_b / vit_l / vit_h checkpoint (method sam)")
    sam_model_type: str = setting("vit_b", "segment-anything model of sam_checkpoint",
                                  choices=("vit_b", "vit_l", "vit_h"))
    sam_points_per_side: int = setting(16, "RGB-only views: grid of prompts for SAM's automatic masks",
                                       range=Range(1))
    sam_min_quality: float = setting(0.85, "RGB-only views: least predicted IoU and stability of an automatic "
                                     "mask", range=Range(0, 1))
    plane_distance: float = setting(0.008, "m, RANSAC inlier distance for the support plane", range=POSITIVE)
    min_height: float = setting(0.004, "m above the support plane for a point to belong to an object",
                                range=POSITIVE)
    noise_sigmas: float = setting(2.0, "... or this many times the support's depth noise there, if more (0: off)",
                                  range=NON_NEGATIVE)
    depth_edge: float = setting(0.012, "depth jump, as a fraction of the depth, that separates objects",
                                range=POSITIVE)
    color_edge: float = setting(20.0, "CIE Lab difference of neighbouring pixels that separates objects (0: off)",
                                range=NON_NEGATIVE)
    crease_edge: float = setting(60.0, "deg the surface turns between pixels 2 apart: an edge between target "
                                 "pixels", range=POSITIVE)
    min_object_pixels: int = setting(150, "px, smaller segments are noise", range=Range(1))
    max_grazing_deg: float = setting(85.0, "deg: depth pixels stepping to both neighbours as steeply as a surface "
                                     "seen this far from face-on are mixed pixels at a depth edge (sensor.py) "
                                     "and count as no measurement (90: keep all)", range=Range(0, 90, low_open=True))
    split_valley: float = setting(0.02, "m: a region is split where it dips this far between two peaks (0: never)",
                                  range=NON_NEGATIVE)
    max_object_size: float = setting(0.5, "m, larger clusters are not graspable objects", range=POSITIVE)
    association_distance: float = setting(0.015, "m, depth agreement of one object seen from two views",
                                          range=POSITIVE)

    def problems(self) -> list[tuple[str, str]]:
        if self.method == "sam" and not self.sam_checkpoint:
            return [("sam_checkpoint", "must be set for method 'sam' (a path to a SAM .pth file)")]
        return []


@dataclass
class PoseConfig(Schema):
    method: str = setting("auto", "camera poses: given (from the input), registration (estimated from RGB-D) or "
                          "auto (given when present, else registration)", choices=("auto", "given", "registration"))
    voxel: float = setting(0.01, "m, downsampling for registration", range=POSITIVE)
    min_fitness: float = setting(0.3, "registration fitness below which an unposed view is not used (warned)",
                                 range=Range(0, 1))


@dataclass
class StereoConfig(Schema):
    """Multi-view plane-sweep stereo of RGB-only views (stereo/sweep.py)."""
    scale: float = setting(0.5, "working resolution relative to the image", range=Range(0, 1, low_open=True))
    coarse_scale: float = setting(0.25, "resolution of the full-range sweep relative to the image",
                                  range=Range(0, 1, low_open=True))
    window: int = setting(9, "px, ZNCC box window at the working resolution", range=Range(1))
    coarse_window: int = setting(7, "px, ZNCC box window of the coarse sweep", range=Range(1))
    step_px: float = setting(1.0, "px, largest image motion in any source between two hypotheses (coarse level)",
                             range=POSITIVE)
    max_planes: int = setting(400, "most depth hypotheses of the coarse sweep", range=Range(16))
    refine_band: int = setting(6, "fine hypotheses on each side of the coarse depth", range=Range(1))
    refine_step_px: float = setting(0.5, "px, image motion between two fine hypotheses", range=POSITIVE)
    top_k: int = setting(2, "source views averaged per hypothesis (the best ones)", range=Range(1))
    min_score: float = setting(0.5, "least ZNCC of the winning hypothesis", range=Range(-1, 1))
    min_margin: float = setting(0.0, "least ZNCC margin of the winner over the best hypothesis away from its peak",
                                range=NON_NEGATIVE)
    min_texture: float = setting(0.8, "least grey-level standard deviation over the window", range=NON_NEGATIVE)
    min_epipolar_texture: float = setting(0.0, "px^-1, least RMS grey-level gradient along the epipolar lines",
                                          range=NON_NEGATIVE)
    near: float = setting(0.1, "m, nearest depth considered", range=POSITIVE)
    far: float = setting(6.0, "m, farthest depth considered", range=POSITIVE)
    range_factors: tuple[float, float] = setting(
        (0.35, 3.5), "depth range swept, as factors of the depth where the optical axes meet", range=POSITIVE)
    max_angle_deg: float = setting(80.0, "deg, source views whose optical axis turns further away are not used",
                                   range=Range(0, 180, low_open=True))
    min_baseline: float = setting(0.02, "m, source views nearer than this to the reference are not used",
                                  range=NON_NEGATIVE)
    edge_jump: float = setting(0.02, "relative depth change between neighbours treated as a jump (not filled)",
                               range=POSITIVE)
    consistency: float = setting(0.01, "relative depth agreement of two views for the cross-check",
                                 range=NON_NEGATIVE)
    consistency_px: float = setting(2.0, "px (full resolution), reprojection distance allowed by the cross-check "
                                    "(0: not checked)", range=NON_NEGATIVE)
    min_consistent: int = setting(1, "other views that must agree with a depth for it to be kept", range=Range(1))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.near >= self.far:
            found.append(("near", f"must be < far ({self.far}), got {self.near}"))
        if self.range_factors[0] >= self.range_factors[1]:
            found.append(("range_factors", f"must be increasing, got {list(self.range_factors)}"))
        return found


@dataclass
class FuseConfig(Schema):
    voxels: int = setting(32, "evidence grid cells along each axis (a multiple of 8 for the learned model)",
                          range=Range(8, 128, step=8))
    margin: float = setting(0.35, "the grid extends the visible extent by this fraction for hidden parts",
                            range=Range(0, 2))
    min_margin: float = setting(0.05, "m, at least this much room around the visible points", range=NON_NEGATIVE)
    surface_band: float = setting(1.5, "voxels, |sdf| band counted as observed surface", range=POSITIVE)
    min_voxel: float = setting(0.002, "m, smallest grid cell", range=POSITIVE)
    max_voxel: float = setting(0.02, "m, largest grid cell", range=POSITIVE)
    constraint_factor: int = setting(
        2, "the measured surface and seen-through space are also fused on a grid this many times finer (1: not), "
        "which the constraints use when meshing at that resolution (complete.resolution = voxels x this); cells "
        "of the meshing grid then keep their own votes instead of sharing a coarse cell's", range=Range(1, 4))

    def problems(self) -> list[tuple[str, str]]:
        if self.min_voxel > self.max_voxel:
            return [("min_voxel", f"must be <= max_voxel ({self.max_voxel}), got {self.min_voxel}")]
        return []


@dataclass
class CompleteConfig(Schema):
    method: str = setting("learned", "completion: learned (the shipped model), extrusion, hull or visible",
                          choices=COMPLETION_METHODS)
    rgb_only_method: str = setting(
        "extrusion", "completion of RGB-only views, whose evidence is a visual hull, not what the model was "
        "trained on ('': method; docs/BENCHMARKS.md)", choices=("", *COMPLETION_METHODS))
    weights: str = setting("", "learned model weights (.safetensors); '': the shipped model")
    resolution: int = setting(64, "occupancy queries along each axis at meshing time", range=Range(16, 256))
    threshold: float = setting(0.5, "occupancy above which a point is inside",
                               range=Range(0, 1, low_open=True, high_open=True))
    rotations: int = setting(2, "learned model: quarter turns about the vertical it is asked about and averaged "
                             "over (more: a little more accuracy for more time on a CPU; on a GPU the turns are "
                             "one batch)", choices=(1, 2, 4))
    symmetry: bool = setting(True, "average every completion over turns about the object's vertical axis when "
                             "its measured surface is a surface of revolution (cans, fruit, mugs) and the result "
                             "agrees with the observations (complete/symmetry.py; depth views only)")


@dataclass
class MeshConfig(Schema):
    cloud_points: int = setting(4096, "completed-surface samples per object", range=Range(16))
    smooth_sigma: float = setting(0.3, "evidence-grid voxels of Gaussian smoothing of occupancy before marching "
                                  "cubes (more erases thin walls and plates; docs/BENCHMARKS.md)",
                                  range=NON_NEGATIVE)
    rgb_only_smooth_sigma: float = setting(0.6, "the same for RGB-only views, whose visual-hull evidence is ragged",
                                           range=NON_NEGATIVE)


@dataclass
class PipelineConfig(Schema):
    device: str = setting("auto", "where models run: auto (cuda when torch sees one), cpu, cuda or cuda:N")
    segment: SegmentConfig = section(SegmentConfig, "segmentation: support plane, objects, targets (segment/)")
    poses: PoseConfig = section(PoseConfig, "camera poses: given or registered (poses/)")
    stereo: StereoConfig = section(StereoConfig, "RGB-only views: plane-sweep stereo for the support (stereo/)")
    fuse: FuseConfig = section(FuseConfig, "per-object evidence grid (fuse/)")
    complete: CompleteConfig = section(CompleteConfig, "completion of the hidden parts (complete/)")
    mesh: MeshConfig = section(MeshConfig, "meshing and surface samples (mesh.py)")

    @classmethod
    def from_yaml(cls, path: str | Path, section_name: str = "pipeline") -> "PipelineConfig":
        """A plain YAML of pipeline keys, or a ROS 2 parameter file of the node (its ``pipeline`` section)."""
        return cls.from_dict(read_yaml(path, section_name))

    def problems(self) -> list[tuple[str, str]]:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            return [("device", f"must be auto, cpu or cuda[:N], got '{self.device}'")]
        return []
