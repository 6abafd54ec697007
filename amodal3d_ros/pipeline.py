"""The reconstruction pipeline: frames in, completed objects out.

    frames -> poses (given or estimated) -> segment (support, objects, targets) -> fuse (evidence
    grid per object) -> complete (occupancy) -> constrain (observations win) -> mesh -> analyse
    (visible fraction, occluders, pose, box: analysis.py; per-point confidence: confidence.py)

The CLI, the ROS node and the tests all call ``Reconstructor.reconstruct``. Each stage lives in its
own module; this one only runs them in order.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

from .analysis import analyse_visibility, object_box
from .complete import Completer, constrain, constraint_grid, make_completer
from .complete.symmetry import RevolutionAxis, symmetrize
from .config import PipelineConfig
from .confidence import SurfaceEvidence
from .fuse import EvidenceGrid, fuse_object
from .geometry import transform_points
from .mesh import mesh_from_occupancy, sample_surface, shrink_unobserved
from .poses import drop_weak_views, resolve_poses
from .result import ReconstructedObject, Reconstruction
from .scene import Frame, Scene, Target
from .segment import make_rgb_only_segmenter, make_segmenter
from .sensor import drop_mixed_pixels
from .segment.base import SceneSegmentation, SegmentedObject

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; an explicit 'cuda' without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but torch sees no CUDA GPU")
    return device


@dataclass
class PreparedScene:
    """A scene up to (not including) completion; several completers can finish it."""

    frames: list[Frame]
    poses: list[np.ndarray]
    poses_estimated: bool
    view_fitness: list[float]  # registration fitness per view (1 for given poses); poses.min_fitness drops
    frame_id: str
    segmentation: SceneSegmentation
    evidence: dict[str, EvidenceGrid]
    warnings: list[str]
    seconds: float
    rgb_only: bool = False  # depth came from stereo and silhouettes


class Reconstructor:
    """Holds the loaded models; ``close`` releases them (and their GPU memory)."""

    def __init__(self, config: Optional[PipelineConfig] = None):
        self.config = config or PipelineConfig()
        self.config.validate()
        self.device = resolve_device(self.config.device)
        import open3d  # noqa: F401  (a slow first import: pay it here, not in the first reconstruction)

        self.segmenter = make_segmenter(self.config.segment, self.device)
        self.rgb_only_segmenter = make_rgb_only_segmenter(self.config.segment, self.segmenter)
        self.completer = make_completer(self.config.complete, self.device)
        rgb_only_method = self.config.complete.rgb_only_method or self.config.complete.method
        self.rgb_only_completer = self.completer if rgb_only_method == self.config.complete.method else \
            make_completer(replace(self.config.complete, method=rgb_only_method), self.device)

    def close(self) -> None:
        self.segmenter = None
        self.rgb_only_segmenter = None
        self.completer = None
        self.rgb_only_completer = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ entry points
    def reconstruct_scene(self, scene: Scene) -> Reconstruction:
        return self.reconstruct(scene.frames, scene.targets, scene.world_frame)

    def reconstruct(self, frames: Sequence[Frame], targets: Optional[Sequence[Target]] = None,
                    world_frame: str = "world") -> Reconstruction:
        return self.complete(self.prepare(frames, targets, world_frame))

    def prepare(self, frames: Sequence[Frame], targets: Optional[Sequence[Target]] = None,
                world_frame: str = "world", segmentation: Optional[SceneSegmentation] = None) -> "PreparedScene":
        """Poses, segmentation and evidence grids: everything before completion.

        ``segmentation``: masks known in advance (the benchmark's ground truth), used instead of the
        segmenter; it needs RGB-D frames and flags its own targets.
        """
        if self.completer is None:
            raise RuntimeError("reconstructor is closed")
        if not frames:
            raise ValueError("no frames to reconstruct from")
        targets = list(targets or [])
        for t in targets:
            if not 0 <= t.frame < len(frames):
                raise ValueError(f"target '{t.id}' names frame {t.frame}, but there are {len(frames)} frames")
        start = time.perf_counter()
        frames = drop_mixed_pixels(frames, self.config.segment.max_grazing_deg)
        poses, estimated, fitness = resolve_poses(frames, self.config.poses)
        frames, warnings = drop_weak_views(frames, fitness, self.config.poses.min_fitness)
        frame_id = "camera_0_optical" if estimated and world_frame == "world" else world_frame
        rgb_only = any(f.depth is None for f in frames)
        if segmentation is not None:
            if rgb_only:
                raise ValueError("given masks need depth in every frame "
                                 "(the RGB-only path segments silhouettes itself)")
        elif rgb_only:
            frames, segmentation = self._segment_rgb_only(frames, poses, targets, warnings)
        else:
            up_hint = -poses[0][:3, 1] if estimated else None  # camera "up" of frame 0; the plane fit decides
            segmentation = self.segmenter.segment(frames, poses, targets, up_hint=up_hint)
        warnings += segmentation.warnings
        chosen = [o for o in segmentation.objects if o.is_target] if targets else list(segmentation.objects)
        fuse = self.config.fuse
        if self.config.complete.resolution != fuse.voxels * fuse.constraint_factor:
            fuse = replace(fuse, constraint_factor=1)  # no constraint grid at the meshing resolution: skip it
        evidence = {}
        for obj in chosen:
            try:
                evidence[obj.id] = fuse_object(frames, poses, segmentation, obj, fuse)
            except ValueError as exc:
                warnings.append(f"object '{obj.id}': {exc}")
        return PreparedScene(frames=list(frames), poses=list(poses), poses_estimated=estimated, view_fitness=fitness,
                             frame_id=frame_id,
                             segmentation=segmentation, evidence=evidence, warnings=warnings,
                             seconds=time.perf_counter() - start, rgb_only=rgb_only)

    def _segment_rgb_only(self, frames, poses, targets, warnings: list[str]):
        """Posed views without depth: stereo where there is texture, silhouettes everywhere else.

        Returns the frames with depth made from the support plane and the objects' visual hulls
        (see :mod:`.segment.rgb`), so fusion and completion run as for RGB-D input.
        """
        from .stereo import complete_depth

        frames, stereo_warnings = complete_depth(frames, poses, self.config.stereo)
        warnings += stereo_warnings
        segmentation, frames = self.rgb_only_segmenter.segment(frames, poses, targets)
        return frames, segmentation

    def complete(self, prepared: "PreparedScene", completer: Optional[Completer] = None) -> Reconstruction:
        """Completion, meshing and analysis of every prepared object (optionally another completer)."""
        completer = completer or (self.rgb_only_completer if prepared.rgb_only else self.completer)
        start = time.perf_counter()
        objects, warnings = [], list(prepared.warnings)
        for obj in prepared.segmentation.objects:
            if obj.id not in prepared.evidence:
                continue
            t0 = time.perf_counter()
            try:
                objects.append(self._reconstruct_object(prepared, obj, completer))
            except ValueError as exc:
                warnings.append(f"object '{obj.id}': {exc}")
                continue
            objects[-1].seconds = time.perf_counter() - t0
        return Reconstruction(objects=objects, frame_id=prepared.frame_id, camera_poses=prepared.poses,
                              poses_estimated=prepared.poses_estimated, view_fitness=prepared.view_fitness,
                              seconds_total=prepared.seconds + time.perf_counter() - start,
                              labels=prepared.segmentation.labels, warnings=warnings)

    # ------------------------------------------------------------------ one object
    def complete_evidence(self, evidence: EvidenceGrid, completer: Optional[Completer] = None,
                          rgb_only: bool = False) -> tuple[np.ndarray, Optional[RevolutionAxis]]:
        """Constrained occupancy (R, R, R) of one evidence grid, and the vertical axis it was pooled
        about (None: not pooled, see complete/symmetry.py)."""
        completer = completer or self.completer
        probability = completer.occupancy(evidence, self.config.complete.resolution)
        axis = None
        # Depth views only: a visual hull's surface is not a measured one to find an axis in. An exact
        # occupancy (the benchmark's true shape) has nothing to gain from pooling.
        if self.config.complete.symmetry and not rgb_only and not completer.exact:
            probability, axis = symmetrize(probability, evidence)
            if axis is not None:
                log.debug("%s completion pooled about a vertical axis at (%.3f, %.3f) m in its grid (residual "
                          "%.2f voxel over %.0f deg)", completer.name, *axis.centre, axis.residual_voxels,
                          axis.span_deg)
        return constrain(probability, evidence), axis

    def mesh_evidence(self, evidence: EvidenceGrid, completer: Optional[Completer] = None,
                      rgb_only: bool = False) -> tuple[np.ndarray, np.ndarray, Optional[RevolutionAxis]]:
        """Evidence in, completed world-frame mesh (vertices, faces) and the symmetry axis used out."""
        completer = completer or self.completer
        occupancy, axis = self.complete_evidence(evidence, completer, rgb_only)
        return *self.mesh_occupancy(occupancy, evidence, completer, rgb_only), axis

    def mesh_occupancy(self, occupancy: np.ndarray, evidence: EvidenceGrid, completer: Completer,
                       rgb_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """A constrained occupancy of ``evidence`` (complete_evidence) in, world-frame vertices and faces out."""
        sigma = self.config.mesh.rgb_only_smooth_sigma if rgb_only else self.config.mesh.smooth_sigma
        # Meshed in the grid frame, where the support is the plane z = 0, then moved to the world once.
        vertices, faces = mesh_from_occupancy(
            occupancy, evidence.origin, evidence.size, np.eye(4),
            level=self.config.complete.threshold,
            smooth_sigma=sigma * occupancy.shape[0] / evidence.shape[0],
            keep_near=evidence.visible_points)
        # A model trained on thickened walls predicts surfaces that much too far out: move them back,
        # but not the measured surface, which constrain placed from the signed distances to within half
        # a cell of the grid it used. A wider zone also kept predicted surfaces near measured ones fat,
        # e.g. the hidden side of a mug's wall or a banana's back (docs/BENCHMARKS.md).
        offset = completer.surface_offset(evidence)
        if offset > 0:
            measured_within = 0.5 * constraint_grid(evidence, occupancy.shape[0]).voxel
            vertices = shrink_unobserved(vertices, faces, offset, evidence.visible_points,
                                         blend=measured_within, floor=0.0)
        return transform_points(evidence.T_world_grid, vertices), faces

    def _reconstruct_object(self, prepared: "PreparedScene", obj: SegmentedObject,
                            completer: Completer) -> ReconstructedObject:
        frames, poses, segmentation = prepared.frames, prepared.poses, prepared.segmentation
        evidence = prepared.evidence[obj.id]
        occupancy, axis = self.complete_evidence(evidence, completer, prepared.rgb_only)
        vertices, faces = self.mesh_occupancy(occupancy, evidence, completer, prepared.rgb_only)
        if len(faces) == 0:
            raise ValueError("completion produced an empty shape")
        cloud = sample_surface(vertices, faces, self.config.mesh.cloud_points)
        T_world_object, bbox_center, bbox_size = object_box(vertices, evidence.T_world_grid)
        visible, occluded, fraction, occluders = analyse_visibility(
            frames, poses, segmentation, obj, vertices, faces)
        surface = SurfaceEvidence(evidence, occupancy)
        on_cloud = surface.assess(cloud, completer, prepared.rgb_only)
        on_vertices = surface.assess(vertices, completer, prepared.rgb_only)
        return ReconstructedObject(
            id=obj.id, label="object", vertices=vertices, faces=faces, cloud=cloud,
            visible_points=obj.points, T_frame_object=T_world_object, bbox_center=bbox_center,
            bbox_size=bbox_size, visible_fraction=fraction, confidence=float(on_cloud.confidence.mean()),
            cloud_confidence=on_cloud.confidence, cloud_observed=on_cloud.observed,
            vertex_confidence=on_vertices.confidence, vertex_observed=on_vertices.observed,
            views_used=evidence.views_used, occluders=occluders, completion_method=completer.name,
            visible_masks=visible, occlusion_masks=occluded,
            symmetry_axis=None if axis is None else axis.in_frame(evidence.T_world_grid))

