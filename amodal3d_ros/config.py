"""One configuration schema for the CLI, the ROS node's parameters and the YAML files in config/.

Each stage has a small dataclass; ``PipelineConfig`` nests them. ``to_flat_dict`` gives dotted
keys (``fuse.voxels``) that the node declares as ROS parameters, ``from_flat_dict`` reads them
back, and ``validate`` names every bad value.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value that is missing, unknown or out of range."""


def changed_settings(recorded: dict, wanted: dict, defaults: dict) -> list[str]:
    """Keys whose value in ``recorded`` (an older record of settings) differs from ``wanted``.

    A key the record lacks had its default then (new settings default to the old behaviour), so
    adding a setting does not orphan data made before it.
    """
    old, new = {**defaults, **recorded}, {**defaults, **wanted}
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


@dataclass
class SegmentConfig:
    method: str = "depth"  # "depth" (no weights) or "sam" (segment-anything checkpoint)
    sam_checkpoint: str = ""  # path to a vit_b / vit_l / vit_h checkpoint (method "sam")
    sam_model_type: str = "vit_b"
    sam_points_per_side: int = 16  # RGB-only views: grid of prompts for SAM's automatic masks
    sam_min_quality: float = 0.85  # RGB-only views: least predicted IoU and stability of an automatic mask
    plane_distance: float = 0.008  # m, RANSAC inlier distance for the support plane
    min_height: float = 0.004  # m above the support plane for a point to belong to an object
    noise_sigmas: float = 2.0  # ... or this many times the support's depth noise there, if more (0: off)
    depth_edge: float = 0.012  # depth jump, as a fraction of the depth, that separates objects
    color_edge: float = 20.0  # CIE Lab difference of neighbouring pixels that separates objects (0: off)
    crease_edge: float = 60.0  # degrees the surface turns between pixels 2 apart: an edge between target pixels
    min_object_pixels: int = 150  # smaller segments are noise
    # Depth pixels stepping to both neighbours as steeply as a surface seen this far from face-on are
    # mixed pixels at a depth edge (sensor.py) and count as no measurement (90: keep all).
    max_grazing_deg: float = 85.0
    split_valley: float = 0.02  # m: a region is split where it dips this far between two peaks (0: never)
    max_object_size: float = 0.5  # m, larger clusters are not graspable objects
    association_distance: float = 0.015  # m, depth agreement of one object seen from two views


@dataclass
class PoseConfig:
    method: str = "auto"  # "auto": given poses when present, else "registration"
    voxel: float = 0.01  # m, downsampling for registration
    min_fitness: float = 0.3  # registration overlap below which a view is reported as weak (it is kept)


@dataclass
class FuseConfig:
    voxels: int = 32  # evidence grid cells along each axis (a multiple of 8 for the learned model)
    margin: float = 0.35  # grid extends the visible extent by this fraction for hidden parts
    min_margin: float = 0.05  # m, at least this much room around the visible points (chosen on validation scenes)
    surface_band: float = 1.5  # voxels, |sdf| band counted as observed surface
    min_voxel: float = 0.002  # m
    max_voxel: float = 0.02  # m
    # The measured surface and seen-through space are also fused on a grid this many times finer
    # (1: not), which the constraints use when meshing at that resolution (complete.resolution 64 =
    # 2 x 32; at other resolutions it is not fused and the coarse grid is resampled as before):
    # cells of the meshing grid keep their own votes instead of sharing a coarse cell's (measured in
    # docs/BENCHMARKS.md).
    constraint_factor: int = 2


@dataclass
class CompleteConfig:
    method: str = "learned"  # "learned" (shipped model), "extrusion", "hull", "visible"
    # RGB-only views: their evidence is a visual hull, not what the model was trained on, and
    # extrusion measured as good there at a quarter of the time (docs/BENCHMARKS.md); "" = ``method``
    rgb_only_method: str = "extrusion"
    weights: str = ""  # empty: the shipped model
    resolution: int = 64  # occupancy queries along each axis at meshing time
    threshold: float = 0.5
    # Learned model only: ask it about the evidence turned by 1, 2 or 4 quarter turns about the vertical
    # and average: more turns, a little more accuracy for more time on a CPU (docs/BENCHMARKS.md); on a
    # GPU, where the turns are one batch, 4 costs little.
    rotations: int = 2
    # Average every completion over turns about the object's vertical axis when its measured surface
    # is a surface of revolution (cans, fruit, mugs) and the result agrees with the observations
    # (complete/symmetry.py). Depth views only. Measured on two validation sets in docs/BENCHMARKS.md.
    symmetry: bool = True


@dataclass
class MeshConfig:
    cloud_points: int = 4096  # completed-surface samples per object
    # Evidence-grid voxels of Gaussian smoothing of occupancy before marching cubes. 0.3 on validation
    # scenes: 0.6 erased thin walls and plates (docs/BENCHMARKS.md); 0 and 0.15 were no better.
    smooth_sigma: float = 0.3
    # RGB-only views: visual-hull evidence is ragged, and 0.6 measured better there (docs/BENCHMARKS.md).
    rgb_only_smooth_sigma: float = 0.6


@dataclass
class PipelineConfig:
    device: str = "auto"  # "auto", "cpu" or "cuda"
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    poses: PoseConfig = field(default_factory=PoseConfig)
    fuse: FuseConfig = field(default_factory=FuseConfig)
    complete: CompleteConfig = field(default_factory=CompleteConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)

    # ------------------------------------------------------------------ conversions
    def to_flat_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}

        def walk(obj, prefix):
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                if dataclasses.is_dataclass(value):
                    walk(value, f"{prefix}{f.name}.")
                else:
                    out[f"{prefix}{f.name}"] = value

        walk(self, "")
        return out

    @classmethod
    def from_flat_dict(cls, flat: dict[str, Any]) -> "PipelineConfig":
        nested: dict[str, Any] = {}
        for key, value in flat.items():
            parts = key.split(".")
            d = nested
            for p in parts[:-1]:
                d = d.setdefault(p, {})
            d[parts[-1]] = value
        return cls.from_dict(nested)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "PipelineConfig":
        config = cls()
        _update(config, data or {}, "")
        config.validate()
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PipelineConfig":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        # Accept both a plain mapping and a ROS 2 parameter file (node: ros__parameters: ...).
        data = _strip_ros_parameters(data)
        data = data.get("pipeline", data)
        return cls.from_dict(data)

    def validate(self) -> None:
        errors = []

        def check(ok: bool, message: str):
            if not ok:
                errors.append(message)

        check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
              f"device must be auto, cpu or cuda[:N], got '{self.device}'")
        check(self.segment.method in ("depth", "sam"), f"segment.method must be depth or sam, got '{self.segment.method}'")
        check(self.segment.sam_model_type in ("vit_b", "vit_l", "vit_h"),
              f"segment.sam_model_type must be vit_b, vit_l or vit_h, got '{self.segment.sam_model_type}'")
        check(self.segment.method != "sam" or bool(self.segment.sam_checkpoint),
              "segment.method 'sam' needs segment.sam_checkpoint (a path to a SAM .pth file)")
        for name in ("plane_distance", "min_height", "depth_edge", "max_object_size", "association_distance"):
            check(getattr(self.segment, name) > 0, f"segment.{name} must be > 0")
        check(self.segment.min_object_pixels >= 1, "segment.min_object_pixels must be >= 1")
        check(self.segment.split_valley >= 0, "segment.split_valley must be >= 0")
        check(self.segment.crease_edge > 0, "segment.crease_edge must be > 0")
        check(self.segment.noise_sigmas >= 0, "segment.noise_sigmas must be >= 0")
        check(0 < self.segment.max_grazing_deg <= 90, "segment.max_grazing_deg must be in (0, 90]")
        check(self.segment.sam_points_per_side >= 1, "segment.sam_points_per_side must be >= 1")
        check(0.0 <= self.segment.sam_min_quality <= 1.0, "segment.sam_min_quality must be in [0, 1]")
        check(self.poses.method in ("auto", "given", "registration"),
              f"poses.method must be auto, given or registration, got '{self.poses.method}'")
        check(8 <= self.fuse.voxels <= 128 and self.fuse.voxels % 8 == 0,
              f"fuse.voxels must be a multiple of 8 in [8, 128], got {self.fuse.voxels}")
        check(0 <= self.fuse.margin <= 2, f"fuse.margin must be in [0, 2], got {self.fuse.margin}")
        check(0 < self.fuse.min_voxel <= self.fuse.max_voxel, "fuse.min_voxel must be > 0 and <= fuse.max_voxel")
        check(self.complete.method in ("learned", "extrusion", "hull", "visible"),
              f"complete.method must be learned, extrusion, hull or visible, got '{self.complete.method}'")
        check(16 <= self.complete.resolution <= 256, f"complete.resolution must be in [16, 256], got {self.complete.resolution}")
        check(0 < self.complete.threshold < 1, "complete.threshold must be in (0, 1)")
        check(self.fuse.constraint_factor in (1, 2, 3, 4),
              f"fuse.constraint_factor must be 1, 2, 3 or 4, got {self.fuse.constraint_factor}")
        check(self.complete.rotations in (1, 2, 4), f"complete.rotations must be 1, 2 or 4, got {self.complete.rotations}")
        check(self.mesh.cloud_points >= 16, "mesh.cloud_points must be >= 16")
        check(self.mesh.smooth_sigma >= 0, "mesh.smooth_sigma must be >= 0")
        check(self.mesh.rgb_only_smooth_sigma >= 0, "mesh.rgb_only_smooth_sigma must be >= 0")
        if errors:
            raise ConfigError("invalid configuration: " + "; ".join(errors))


def _strip_ros_parameters(data: dict) -> dict:
    if isinstance(data, dict) and len(data) == 1:
        (only,) = data.values()
        if isinstance(only, dict) and "ros__parameters" in only:
            return only["ros__parameters"]
    return data


def _update(obj, data: dict, prefix: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown configuration key '{prefix}{key}' (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _update(current, value, f"{prefix}{key}.")
            continue
        setattr(obj, key, _coerce(value, type(current), f"{prefix}{key}"))


def _coerce(value, kind: type, name: str):
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
        if kind is str:
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"'{name}' must be {kind.__name__}, got {value!r}") from exc
    return value
