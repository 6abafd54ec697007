"""What a reconstruction returns: completed objects in a named frame, metres."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

RESULT_FORMAT_VERSION = 1


def write_point_cloud(path: Path, points: np.ndarray) -> None:
    """Binary little-endian PLY of xyz float32 vertices (empty clouds too, which trimesh refuses)."""
    pts = np.ascontiguousarray(np.asarray(points, dtype="<f4").reshape(-1, 3))
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(pts)}\n"
              "property float x\nproperty float y\nproperty float z\nend_header\n")
    Path(path).write_bytes(header.encode("ascii") + pts.tobytes())


@dataclass
class ReconstructedObject:
    id: str
    label: str
    vertices: np.ndarray  # (N, 3) float64, completed amodal mesh in the result frame
    faces: np.ndarray  # (M, 3) int32
    cloud: np.ndarray  # (P, 3) float64, samples of the completed surface
    visible_points: np.ndarray  # (Q, 3) float64, observed points of the object
    T_frame_object: np.ndarray  # (4, 4): object frame (base centre on the support plane, z up)
    bbox_center: np.ndarray  # (3,) in the object frame
    bbox_size: np.ndarray  # (3,) metres, along the object frame's axes
    visible_fraction: float  # observed share of the object's projection in its best view
    confidence: float  # 0..1, share of the completed surface backed by evidence
    views_used: int
    occluders: list[str] = field(default_factory=list)  # other object ids, "support", "border", "no_depth"
    completion_method: str = ""
    seconds: float = 0.0
    visible_masks: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (H, W) bool
    occlusion_masks: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (H, W) bool, hidden part
    # (2, 3): a point on the support and the unit direction (up) of the vertical axis the completion was
    # pooled about, when the object was found rotationally symmetric (complete/symmetry.py); else None
    symmetry_axis: Optional[np.ndarray] = None

    def write(self, folder: Path, fmt: str = "ply") -> list[Path]:
        """Write ``<id>.<fmt>`` (mesh), ``<id>_cloud.ply`` and ``<id>_visible.ply`` into ``folder``."""
        import trimesh

        folder.mkdir(parents=True, exist_ok=True)
        mesh_path = folder / f"{self.id}.{fmt}"
        cloud_path = folder / f"{self.id}_cloud.ply"
        visible_path = folder / f"{self.id}_visible.ply"
        trimesh.Trimesh(self.vertices, self.faces, process=False).export(mesh_path)
        write_point_cloud(cloud_path, self.cloud)
        write_point_cloud(visible_path, self.visible_points)
        return [mesh_path, cloud_path, visible_path]


@dataclass
class Reconstruction:
    objects: list[ReconstructedObject]
    frame_id: str  # the frame of every geometry above
    camera_poses: list[Optional[np.ndarray]]  # T_frame_camera per input frame, given or estimated
    poses_estimated: bool
    seconds_total: float
    labels: list[np.ndarray] = field(default_factory=list)  # per frame (H, W) int32 segmentation
    warnings: list[str] = field(default_factory=list)

    def object(self, object_id: str) -> ReconstructedObject:
        for obj in self.objects:
            if obj.id == object_id:
                return obj
        raise KeyError(object_id)

    def write(self, out: str | Path) -> Path:
        """Write the scene-format output: ``result.json`` and ``objects/``."""
        out = Path(out)
        objects_dir = out / "objects"
        entries = []
        for obj in self.objects:
            obj.write(objects_dir)
            entries.append({
                "id": obj.id,
                "mesh": f"objects/{obj.id}.ply",
                "cloud": f"objects/{obj.id}_cloud.ply",
                "visible": f"objects/{obj.id}_visible.ply",
                "visible_fraction": round(float(obj.visible_fraction), 4),
                "views_used": int(obj.views_used),
                "seconds": round(float(obj.seconds), 4),
                "label": obj.label,
                "confidence": round(float(obj.confidence), 4),
                "occluders": list(obj.occluders),
                "completion_method": obj.completion_method,
                "T_frame_object": np.asarray(obj.T_frame_object).round(6).tolist(),
                "bbox_center": np.asarray(obj.bbox_center).round(6).tolist(),
                "bbox_size": np.asarray(obj.bbox_size).round(6).tolist(),
                "symmetry_axis": None if obj.symmetry_axis is None else {
                    "point": np.asarray(obj.symmetry_axis[0]).round(6).tolist(),
                    "direction": np.asarray(obj.symmetry_axis[1]).round(6).tolist()},
            })
        out.mkdir(parents=True, exist_ok=True)
        doc = {
            "version": RESULT_FORMAT_VERSION,
            "frame": self.frame_id,
            "objects": entries,
            "seconds_total": round(float(self.seconds_total), 4),
            "poses_estimated": self.poses_estimated,
            "camera_poses": [None if T is None else np.asarray(T).round(6).tolist() for T in self.camera_poses],
            "warnings": list(self.warnings),
        }
        (out / "result.json").write_text(json.dumps(doc, indent=1))
        return out
