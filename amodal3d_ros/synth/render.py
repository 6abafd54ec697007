"""A CPU ray-casting renderer (Open3D ``RaycastingScene``) for synthetic scenes and reports.

``render`` gives colour (Lambertian shading: ambient plus one directional light, on a per-object
colour or smooth procedural texture), metric depth along the optical axis (0 = no hit) and an
instance image. Cameras use the ROS optical convention (x right, y down, z forward); pixel
(u, v) looks through its centre at integer coordinates, as in ``amodal3d_ros.geometry.pixel_rays``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import cv2
import numpy as np
import open3d as o3d
import trimesh

from amodal3d_ros.geometry import invert, normalized_coordinates, project, transform_points

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class ProceduralTexture:
    """Smooth low-frequency colour variation: base colour times (1 + amplitude x mean of 3D sine waves).

    Evaluated at world-space surface points, so the pattern is the same from every view.
    """

    base_color: RGB  # 0..1
    wave_vectors: tuple[tuple[float, float, float], ...] = ()  # rad/m
    phases: tuple[float, ...] = ()
    amplitude: float = 0.0

    def colors_at(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) colours in 0..1 at (N, 3) world points."""
        base = np.asarray(self.base_color, dtype=np.float32)
        if not self.wave_vectors:
            return np.broadcast_to(base, (len(points), 3))
        # einsum, not @: BLAS is slow (and thread-hungry) for (N, 3) x (3, k) products
        waves = np.sin(np.einsum("nc,kc->nk", points, np.asarray(self.wave_vectors, dtype=np.float32))
                       + np.asarray(self.phases, dtype=np.float32))
        factor = 1.0 + self.amplitude * waves.mean(axis=1, keepdims=True)
        return np.clip(base * factor, 0.0, 1.0)


def random_texture(rng: np.random.Generator, base_color: Optional[RGB] = None,
                   wavelength_m: tuple[float, float] = (0.03, 0.12), amplitude: float = 0.15,
                   waves: int = 3, stripe_axis: Optional[np.ndarray] = None) -> ProceduralTexture:
    """A random smooth texture; with ``stripe_axis`` the waves run mostly along it (wood-like)."""
    if base_color is None:
        hsv = np.array([[[rng.uniform(0, 180), rng.uniform(60, 200), rng.uniform(150, 240)]]], dtype=np.uint8)
        base_color = tuple((cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] / 255.0).tolist())
    directions = rng.normal(size=(waves, 3))
    if stripe_axis is not None:
        directions = 0.25 * directions + np.asarray(stripe_axis, dtype=np.float64)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wave_numbers = 2 * np.pi / rng.uniform(*wavelength_m, size=waves)
    return ProceduralTexture(base_color=tuple(float(c) for c in base_color),
                             wave_vectors=tuple(map(tuple, (directions * wave_numbers[:, None]).tolist())),
                             phases=tuple(rng.uniform(0, 2 * np.pi, size=waves).tolist()),
                             amplitude=amplitude)


@dataclass(frozen=True)
class Lighting:
    """Ambient plus one directional light; ``direction`` points from the surface to the light
    (world frame). None = a head light slightly above the camera, good for any viewpoint."""

    direction: Optional[tuple[float, float, float]] = None
    ambient: float = 0.35
    diffuse: float = 0.65


Appearance = Union[ProceduralTexture, Sequence[float]]
BACKGROUND_RGB = (97, 97, 97)


def as_texture(appearance: Appearance) -> ProceduralTexture:
    """A texture from a texture or a plain RGB colour (0..1 floats or 0..255 ints)."""
    if isinstance(appearance, ProceduralTexture):
        return appearance
    color = np.asarray(appearance, dtype=np.float64)[:3]
    if color.max() > 1.0:
        color = color / 255.0
    return ProceduralTexture(base_color=tuple(color.tolist()))


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """T_world_camera for a camera at ``eye`` looking at ``target`` (optical frame: x right,
    y down, z forward), with ``up`` pointing up in the image."""
    eye, target, up = (np.asarray(x, dtype=np.float64) for x in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:  # looking along up: any perpendicular will do
        x = np.cross(z, [1.0, 0.0, 0.0] if abs(z[0]) < 0.9 else [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


@dataclass
class RayHits:
    """First hits of the rays through one window of the image (pixels outside it hit nothing)."""

    rows: slice
    cols: slice
    t: np.ndarray  # (h, w) float32 ray parameter, inf = miss; rays have camera-frame z = 1, so t = depth
    mesh_index: np.ndarray  # (h, w) int32, -1 = miss
    origin: np.ndarray  # (3,) camera centre, world frame
    directions: np.ndarray  # (h, w, 3) float32 ray directions (camera-frame z = 1), world frame
    face_normals: np.ndarray  # (h, w, 3) float32 as wound in the mesh, world frame

    @property
    def hit(self) -> np.ndarray:
        return self.mesh_index >= 0


class MeshRenderer:
    """Meshes built into one ray-casting scene once, then rendered from any number of cameras."""

    def __init__(self, meshes: Sequence[trimesh.Trimesh], appearances: Optional[Sequence[Appearance]] = None,
                 instance_ids: Optional[Sequence[int]] = None, lighting: Lighting = Lighting(),
                 background: Sequence[int] = BACKGROUND_RGB) -> None:
        self.meshes = list(meshes)
        appearances = appearances if appearances is not None else [(0.7, 0.7, 0.7)] * len(self.meshes)
        if len(appearances) != len(self.meshes):
            raise ValueError(f"{len(self.meshes)} meshes but {len(appearances)} colours/textures")
        self.textures = [as_texture(a) for a in appearances]
        ids = list(instance_ids) if instance_ids is not None else list(range(1, len(self.meshes) + 1))
        if len(ids) != len(self.meshes):
            raise ValueError(f"{len(self.meshes)} meshes but {len(ids)} instance ids")
        self.instance_lut = np.array(ids + [0], dtype=np.int32)  # index -1 (no hit) -> 0
        self.lighting = lighting
        self.background = np.asarray(background, dtype=np.uint8)
        self._scene = o3d.t.geometry.RaycastingScene()
        geometry_ids = [self._scene.add_triangles(o3d.core.Tensor(np.asarray(m.vertices, dtype=np.float32)),
                                                  o3d.core.Tensor(np.asarray(m.faces, dtype=np.uint32)))
                        for m in self.meshes]
        self._index_of_geometry = np.full(max(geometry_ids, default=0) + 2, -1, dtype=np.int32)
        self._index_of_geometry[geometry_ids] = np.arange(len(geometry_ids))
        bounds = np.array([m.bounds for m in self.meshes]) if self.meshes else np.zeros((1, 2, 3))
        lo, hi = bounds[:, 0].min(axis=0), bounds[:, 1].max(axis=0)
        self._corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])

    def _pixel_window(self, K: np.ndarray, T_world_camera: np.ndarray, width: int, height: int
                      ) -> tuple[int, int, int, int]:
        """(u0, v0, u1, v1): the image window the meshes' bounding box projects into; only
        those rays are cast (small objects rendered alone cost almost nothing)."""
        corners = transform_points(invert(T_world_camera), self._corners)
        if np.any(corners[:, 2] <= 1e-6):  # box reaches behind the camera: no useful bound
            return 0, 0, width, height
        uv, _ = project(K, corners)
        u0, v0 = np.maximum(np.floor(uv.min(axis=0)).astype(int) - 1, 0)
        u1, v1 = np.minimum(np.ceil(uv.max(axis=0)).astype(int) + 2, [width, height])
        return int(u0), int(v0), int(max(u1, u0)), int(max(v1, v0))

    def cast(self, K, T_world_camera, width: int, height: int) -> RayHits:
        K, T_world_camera = np.asarray(K, dtype=np.float64), np.asarray(T_world_camera, dtype=np.float64)
        u0, v0, u1, v1 = self._pixel_window(K, T_world_camera, width, height)
        # Pixel (u, v) looks through its centre at integer coordinates (as geometry.pixel_rays);
        # built in float32 straight from the rotation's columns, which is much faster than a matmul.
        R = T_world_camera[:3, :3].astype(np.float32)
        x, y = (c.astype(np.float32) for c in normalized_coordinates(K, np.arange(u0, u1), np.arange(v0, v1)))
        rays = np.empty((v1 - v0, u1 - u0, 6), dtype=np.float32)
        rays[..., :3] = T_world_camera[:3, 3]
        rays[..., 3:] = x[None, :, None] * R[:, 0] + y[:, None, None] * R[:, 1] + R[:, 2]
        hits = self._scene.cast_rays(o3d.core.Tensor(rays))
        t = hits["t_hit"].numpy()
        geometry = hits["geometry_ids"].numpy().astype(np.int64)
        mesh_index = self._index_of_geometry[np.where(np.isfinite(t), geometry, -1)]
        return RayHits(slice(v0, v1), slice(u0, u1), t, mesh_index, T_world_camera[:3, 3].astype(np.float32),
                       rays[..., 3:], hits["primitive_normals"].numpy())

    def render_depth_instance(self, K, T_world_camera, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Depth (float32 m, 0 = no hit) and instance ids (int32), without shading."""
        hits = self.cast(K, T_world_camera, width, height)
        return self._depth_image(hits, width, height), self._instance_image(hits, width, height)

    def render(self, K, T_world_camera, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rgb uint8 HxWx3, depth float32 m with 0 = no hit, instance int32)."""
        hits = self.cast(K, T_world_camera, width, height)
        hit = hits.hit
        t = np.where(hit, hits.t, 0.0)[..., None]
        points = hits.origin + hits.directions * t
        facing = np.einsum("hwc,hwc->hw", hits.face_normals, hits.directions)
        normals = hits.face_normals * -np.sign(facing + 1e-12)[..., None]  # two-sided: face the camera
        light = self._light_direction(np.asarray(T_world_camera, dtype=np.float64))
        shade = self.lighting.ambient + self.lighting.diffuse * np.clip(np.einsum("hwc,c->hw", normals, light), 0, 1)
        albedo = np.zeros(points.shape, dtype=np.float32)
        flat_points, flat_albedo, flat_index = points.reshape(-1, 3), albedo.reshape(-1, 3), hits.mesh_index.ravel()
        for i, texture in enumerate(self.textures):
            mine = np.flatnonzero(flat_index == i)  # integer indexing: faster than boolean masks here
            if len(mine):
                flat_albedo[mine] = texture.colors_at(flat_points[mine])
        window = np.where(hit[..., None], np.clip(255.0 * albedo * shade[..., None] + 0.5, 0, 255), self.background)
        rgb = np.empty((height, width, 3), dtype=np.uint8)
        rgb[:] = self.background
        rgb[hits.rows, hits.cols] = window.astype(np.uint8)
        return rgb, self._depth_image(hits, width, height), self._instance_image(hits, width, height)

    @staticmethod
    def _depth_image(hits: RayHits, width: int, height: int) -> np.ndarray:
        depth = np.zeros((height, width), dtype=np.float32)
        depth[hits.rows, hits.cols] = np.where(hits.hit, hits.t, 0.0)
        return depth

    def _instance_image(self, hits: RayHits, width: int, height: int) -> np.ndarray:
        instance = np.zeros((height, width), dtype=np.int32)
        instance[hits.rows, hits.cols] = self.instance_lut[hits.mesh_index]
        return instance

    def _light_direction(self, T_world_camera: np.ndarray) -> np.ndarray:
        if self.lighting.direction is not None:
            d = np.asarray(self.lighting.direction, dtype=np.float64)
        else:  # head light: from behind the camera and a little above it (-y is up in the image)
            d = T_world_camera[:3, :3] @ np.array([0.0, -0.5, -1.0])
        return (d / np.linalg.norm(d)).astype(np.float32)


def render(meshes: Sequence[trimesh.Trimesh], colors_or_textures: Optional[Sequence[Appearance]], K: np.ndarray,
           T_world_camera: np.ndarray, width: int, height: int, instance_ids: Optional[Sequence[int]] = None,
           lighting: Lighting = Lighting(), background: Sequence[int] = BACKGROUND_RGB
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render world-frame meshes from one camera: (rgb uint8 HxWx3, depth float32 metres along
    the optical axis with 0 = no hit, instance int32 with 0 = nothing and ``instance_ids[i]``
    (default i + 1) for mesh i). ``colors_or_textures``: per mesh an RGB colour (0..1 or 0..255)
    or a :class:`ProceduralTexture`; None = grey. For several views of the same meshes, build a
    :class:`MeshRenderer` once instead."""
    renderer = MeshRenderer(meshes, colors_or_textures, instance_ids, lighting, background)
    return renderer.render(K, T_world_camera, width, height)
