"""What a reconstruction returns: completed objects in a named frame, metres."""
from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from . import safe_io

RESULT_FORMAT_VERSION = 1
# A file directly inside objects/ (no sub-folder, no "." or ".."): the only kind the writer ever deletes.
_OBJECT_FILE = re.compile(r"objects/(?!\.\.?$)[^/\\\x00]+")


# The per-point ``confidence`` of completed surfaces: the probability of lying within this distance of the
# true surface (metres). The outputs' contract; confidence.py computes it.
CONFIDENCE_TOLERANCE = 0.005
_PLY_TYPES = {np.dtype("<f4"): "float", np.dtype("u1"): "uchar"}


def point_cloud_ply(points: np.ndarray, **properties: np.ndarray) -> bytes:
    """Binary little-endian PLY of xyz float32 vertices plus extra per-vertex ``properties`` (name=array,
    float32 or uint8), which readers of xyz alone skip; empty clouds too, which trimesh refuses."""
    pts = np.asarray(points, dtype="<f4").reshape(-1, 3)
    columns = {"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2]}
    for name, values in properties.items():
        values = np.asarray(values).reshape(len(pts))
        columns[name] = values.astype("u1" if values.dtype in (np.bool_, np.uint8) else "<f4")
    record = np.empty(len(pts), dtype=[(name, values.dtype) for name, values in columns.items()])
    for name, values in columns.items():
        record[name] = values
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(pts)}\n"
              + "".join(f"property {_PLY_TYPES[values.dtype]} {name}\n" for name, values in columns.items())
              + "end_header\n")
    return header.encode("ascii") + record.tobytes()


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
    confidence: float  # 0..1, the mean of cloud_confidence: the expected share of the surface within tolerance
    views_used: int
    occluders: list[str] = field(default_factory=list)  # other object ids, "support", "border", "no_depth"
    completion_method: str = ""
    seconds: float = 0.0
    visible_masks: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (H, W) bool
    occlusion_masks: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (H, W) bool, hidden part
    # (2, 3): a point on the support and the unit direction (up) of the vertical axis the completion was
    # pooled about, when the object was found rotationally symmetric (complete/symmetry.py); else None
    symmetry_axis: Optional[np.ndarray] = None
    # Per point of ``cloud`` and per vertex (confidence.py): the probability of lying within
    # CONFIDENCE_TOLERANCE of the true surface, and whether it lies on the measured surface (True) or was
    # inferred. None where not assessed (e.g. an object read back from a message without them).
    cloud_confidence: Optional[np.ndarray] = None  # (P,) float32
    cloud_observed: Optional[np.ndarray] = None  # (P,) bool
    vertex_confidence: Optional[np.ndarray] = None  # (N,) float32
    vertex_observed: Optional[np.ndarray] = None  # (N,) bool

    def cloud_properties(self) -> dict[str, np.ndarray]:
        """The cloud's per-point fields beyond xyz, by name: ``confidence`` (float32), ``observed`` (bool)."""
        return _present({"confidence": self.cloud_confidence, "observed": self.cloud_observed}, len(self.cloud))

    def vertex_properties(self) -> dict[str, np.ndarray]:
        """The mesh's per-vertex fields beyond xyz, by name, as for the cloud."""
        return _present({"confidence": self.vertex_confidence, "observed": self.vertex_observed}, len(self.vertices))

    def file_contents(self, fmt: str = "ply") -> dict[str, bytes]:
        """File name suffix -> content: the mesh ``.<fmt>``, ``_cloud.ply`` and ``_visible.ply``."""
        import trimesh

        mesh = trimesh.Trimesh(self.vertices, self.faces, process=False)
        for name, values in self.vertex_properties().items():  # PLY vertex properties (other formats drop them)
            mesh.vertex_attributes[name] = values.astype(np.uint8 if values.dtype == bool else np.float32)
        data = mesh.export(file_type=fmt)
        return {f".{fmt}": data.encode() if isinstance(data, str) else data,
                "_cloud.ply": point_cloud_ply(self.cloud, **self.cloud_properties()),
                "_visible.ply": point_cloud_ply(self.visible_points)}

    def write(self, folder: Path, fmt: str = "ply") -> list[Path]:
        """Write ``<id>.<fmt>`` (mesh), ``<id>_cloud.ply`` and ``<id>_visible.ply`` into ``folder``, each atomically."""
        checked_ids([self])
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return [safe_io.atomic_write(folder / f"{self.id}{suffix}", data)
                for suffix, data in self.file_contents(fmt).items()]


def _present(named: dict[str, Optional[np.ndarray]], count: int) -> dict[str, np.ndarray]:
    """The arrays that are there, flat, each checked to hold one value per point."""
    present = {name: np.asarray(values).reshape(-1) for name, values in named.items() if values is not None}
    for name, values in present.items():
        if len(values) != count:
            raise ValueError(f"per-point '{name}' has {len(values)} values for {count} points")
    return present


def checked_ids(objects: list[ReconstructedObject]) -> None:
    """Ids name files: each must be safe (safe_io.check_id) and unique; else ValueError naming it."""
    seen = set()
    for obj in objects:
        try:
            safe_io.check_id(obj.id)
        except safe_io.UnsafePathError as exc:
            raise safe_io.UnsafePathError(f"object id {obj.id!r:.80}: {exc}") from None
        if obj.id in seen:
            raise safe_io.UnsafePathError(f"object id {obj.id!r}: used by two objects (ids must be unique)")
        seen.add(obj.id)


@dataclass
class Reconstruction:
    objects: list[ReconstructedObject]
    frame_id: str  # the frame of every geometry above
    camera_poses: list[Optional[np.ndarray]]  # T_frame_camera per input frame, given or estimated
    poses_estimated: bool
    seconds_total: float
    labels: list[np.ndarray] = field(default_factory=list)  # per frame (H, W) int32 segmentation
    view_fitness: list[float] = field(default_factory=list)  # registration fitness per view (1: given pose)
    warnings: list[str] = field(default_factory=list)

    def object(self, object_id: str) -> ReconstructedObject:
        for obj in self.objects:
            if obj.id == object_id:
                return obj
        raise KeyError(object_id)

    def write(self, out: str | Path) -> Path:
        """Write the scene-format output, ``result.json`` and ``objects/``, so that a run killed at any
        point leaves the previous complete result or the new one, never a mix.

        Each file is written atomically. Over a previous result, the new files are first written
        under fresh names and result.json is pointed at them (naming the previous result's files
        that go, so that a killed run's successor removes them); only then are those removed, the
        spec names (``objects/<id>.ply``) replaced and result.json pointed at them.
        """
        checked_ids(self.objects)
        out = safe_io.writable_folder(out, "output folder")
        contents = {obj.id: obj.file_contents("ply") for obj in self.objects}  # nothing on disk changes yet
        (out / "objects").mkdir(exist_ok=True)
        previous = _files_named_by(out)

        def names(prefix: str) -> dict[str, dict[str, str]]:
            return {obj_id: {suffix: f"objects/{prefix}{obj_id}{suffix}" for suffix in files}
                    for obj_id, files in contents.items()}

        final = names("")
        if previous:
            stale = previous - {out / rel for files in final.values() for rel in files.values()}
            staged = names(f"{safe_io.TEMP_PREFIX}{secrets.token_hex(4)}-")
            self._write_files(out, contents, staged, sorted(str(p.relative_to(out)) for p in stale))
            for path in stale:
                path.unlink(missing_ok=True)
        self._write_files(out, contents, final)
        for folder in (out, out / "objects"):
            safe_io.remove_leftovers(folder)  # the staged copies, temporaries of killed runs
        return out

    def _write_files(self, out: Path, contents: dict[str, dict[str, bytes]], names: dict[str, dict[str, str]],
                     stale_files: list[str] = ()) -> None:
        """Every object's files under ``names[id][suffix]``, then result.json naming them."""
        for obj_id, files in contents.items():
            for suffix, data in files.items():
                safe_io.atomic_write(out / names[obj_id][suffix], data)
        doc = self._document(names)
        if stale_files:
            doc["stale_files"] = list(stale_files)  # only while a rewrite is under way
        safe_io.atomic_write(out / "result.json", json.dumps(doc, indent=1))

    def _document(self, names: dict[str, dict[str, str]]) -> dict:
        """result.json, with each object's files named by ``names[id][suffix]``."""
        entries = []
        for obj in self.objects:
            entries.append({
                "id": obj.id,
                "mesh": names[obj.id][".ply"],
                "cloud": names[obj.id]["_cloud.ply"],
                "visible": names[obj.id]["_visible.ply"],
                "visible_fraction": round(float(obj.visible_fraction), 4),
                "views_used": int(obj.views_used),
                "seconds": round(float(obj.seconds), 4),
                "label": obj.label,
                "confidence": round(float(obj.confidence), 4),
                # Extra vertex properties of the PLY files named above (beyond x, y, z).
                "cloud_properties": list(obj.cloud_properties()),
                "mesh_vertex_properties": list(obj.vertex_properties()),
                "observed_share": None if obj.cloud_observed is None or not len(obj.cloud_observed)
                else round(float(np.mean(obj.cloud_observed)), 4),
                "occluders": list(obj.occluders),
                "completion_method": obj.completion_method,
                "T_frame_object": np.asarray(obj.T_frame_object).round(6).tolist(),
                "bbox_center": np.asarray(obj.bbox_center).round(6).tolist(),
                "bbox_size": np.asarray(obj.bbox_size).round(6).tolist(),
                "symmetry_axis": None if obj.symmetry_axis is None else {
                    "point": np.asarray(obj.symmetry_axis[0]).round(6).tolist(),
                    "direction": np.asarray(obj.symmetry_axis[1]).round(6).tolist()},
            })
        return {
            "version": RESULT_FORMAT_VERSION,
            "frame": self.frame_id,
            "confidence_tolerance_m": CONFIDENCE_TOLERANCE,
            "objects": entries,
            "seconds_total": round(float(self.seconds_total), 4),
            "poses_estimated": self.poses_estimated,
            "camera_poses": [None if T is None else np.asarray(T).round(6).tolist() for T in self.camera_poses],
            "view_fitness": [round(float(f), 4) for f in self.view_fitness],
            "warnings": list(self.warnings),
        }


def _files_named_by(out: Path) -> set[Path]:
    """The files in ``out/objects`` that ``out/result.json`` names, as outputs or as stale files of an
    unfinished rewrite (none if it is missing or unreadable).

    Only names directly inside ``objects/`` count: a result.json naming anything else never makes
    the writer delete it.
    """
    try:
        doc = json.loads((out / "result.json").read_text())
        names = [o.get(key) for o in doc["objects"] if isinstance(o, dict) for key in ("mesh", "cloud", "visible")]
        names += list(doc.get("stale_files") or [])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
    return {out / name for name in names if isinstance(name, str) and _OBJECT_FILE.fullmatch(name)}
