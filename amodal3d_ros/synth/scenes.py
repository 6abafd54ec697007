"""Synthetic table-top scenes: layout, cameras, target choice, rendering and sensor noise.

``generate_scene(seed, config)`` is deterministic: the same seed and config give the same bytes.
A table (thin box) stands at a random height above a floor; objects rest upright on it (random
yaw) without interpenetration, packed so that they hide each other; targets are objects that are
``config.occlusion`` occluded (by pixel area) in frame 0. Layouts and cameras are redrawn until
that holds, for at most ``config.max_attempts`` layouts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Union

import cv2
import numpy as np
import trimesh

from amodal3d_ros.geometry import invert
from amodal3d_ros.scene import Frame, Scene, Target
from amodal3d_ros.synth.objects import SPLITS, ObjectSample, ProceduralSource, object_library
from amodal3d_ros.synth.render import Lighting, MeshRenderer, ProceduralTexture, look_at, random_texture
from amodal3d_ros.synth.sensor import DepthNoiseModel, StereoDepthModel

GENERATOR_NAME = "amodal3d_ros.synth"
GENERATOR_VERSION = 1

INSTANCE_NOTHING, INSTANCE_TABLE, INSTANCE_FLOOR, INSTANCE_FIRST_OBJECT = 0, 1, 2, 10

# RealSense D435-like colour intrinsics at the reference resolution; scaled for smaller images.
REFERENCE_SIZE = (640, 480)
REFERENCE_K = np.array([[615.0, 0.0, 320.0], [0.0, 615.0, 240.0], [0.0, 0.0, 1.0]])

Range = tuple[float, float]
# Depth sensor models: the original structured-light model (the benchmark's and the shipped weights'
# training data) and an active-stereo model fitted to real RealSense frames (synth/compare.py).
SENSORS = ("structured_light_v1", "realsense")


class SceneGenerationError(RuntimeError):
    """No layout satisfied the constraints within the allowed number of attempts."""


@dataclass
class SynthConfig:
    split: str = "train"  # "train" or "val" (see objects.object_library)
    n_objects: tuple[int, int] = (2, 6)  # inclusive range
    n_views: Union[int, tuple[int, int]] = (1, 6)  # fixed count or inclusive range
    max_targets: int = 1
    # Chance that an object is drawn from the procedural shape families rather than the fixed meshes;
    # None: every source of the split equally likely (the families are 10 of the train split's 44).
    procedural_share: Optional[float] = None
    camera_distance: Range = (0.5, 0.9)  # m from the scene centre
    elevation_deg: Range = (25.0, 60.0)
    azimuth_step_deg: Range = (20.0, 60.0)  # between consecutive views
    width: int = 640
    height: int = 480
    table_top_z: Range = (0.0, 0.5)  # world z of the table top
    table_height: Range = (0.7, 0.8)  # table top above the floor
    table_size_x: Range = (1.0, 1.6)
    table_size_y: Range = (0.8, 1.0)
    table_thickness: float = 0.03
    occlusion: Range = (0.30, 0.75)  # of each target in frame 0, by pixel area
    min_target_area: float = 0.002  # unoccluded target pixels as a fraction of the image
    target_pixel_erosion: int = 6  # px at 640 wide (scaled with the width): target pixel margin
    object_gap: float = 0.004  # m, minimum footprint clearance between objects
    depth: bool = True  # False: RGB-only scenes
    posed: bool = True  # False: drop T_world_camera, gt in frame 0's optical frame
    sensor: str = "structured_light_v1"  # one of SENSORS: which model below turns rendered depth into measured
    noise: DepthNoiseModel = field(default_factory=DepthNoiseModel)  # sensor "structured_light_v1"
    realsense: StereoDepthModel = field(default_factory=StereoDepthModel)  # sensor "realsense"
    seconds_between_views: float = 2.0
    max_attempts: int = 40  # layouts
    cameras_per_layout: int = 4  # frame-0 cameras tried per layout

    def __post_init__(self) -> None:
        self.n_objects = tuple(self.n_objects)
        if not isinstance(self.n_views, int):
            self.n_views = tuple(self.n_views)
        if isinstance(self.noise, dict):  # from a json round trip
            self.noise = DepthNoiseModel(**self.noise)
        if isinstance(self.realsense, dict):
            self.realsense = StereoDepthModel(**self.realsense)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad value."""
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got '{self.split}'")
        if self.sensor not in SENSORS:
            raise ValueError(f"sensor must be one of {SENSORS}, got '{self.sensor}'")
        views = (self.n_views, self.n_views) if isinstance(self.n_views, int) else self.n_views
        ranges = (("n_objects", self.n_objects, 1), ("n_views", views, 1), ("occlusion", self.occlusion, 0.0),
                  ("camera_distance", self.camera_distance, 0.1), ("elevation_deg", self.elevation_deg, 1.0),
                  ("azimuth_step_deg", self.azimuth_step_deg, 0.0))
        for name, (lo, hi), minimum in ranges:
            if not minimum <= lo <= hi:
                raise ValueError(f"{name} must be a range with {minimum} <= min <= max, got {(lo, hi)}")
        if self.occlusion[1] > 1.0 or self.elevation_deg[1] >= 90.0:
            raise ValueError("occlusion must lie in [0, 1] and elevation below 90 degrees")
        if self.width < 16 or self.height < 16:
            raise ValueError(f"image size must be at least 16x16, got {self.width}x{self.height}")
        if self.max_targets < 1 or self.max_attempts < 1 or self.cameras_per_layout < 1:
            raise ValueError("max_targets, max_attempts and cameras_per_layout must be >= 1")
        if self.procedural_share is not None and not 0.0 <= self.procedural_share <= 1.0:
            raise ValueError(f"procedural_share must lie in [0, 1] (or be None), got {self.procedural_share}")

    def intrinsics(self) -> np.ndarray:
        K = REFERENCE_K.copy()
        K[0] *= self.width / REFERENCE_SIZE[0]
        K[1] *= self.height / REFERENCE_SIZE[1]
        return K

    def depth_sensor(self) -> Union[DepthNoiseModel, StereoDepthModel]:
        """The sensor model that turns rendered depth into measured depth."""
        return self.realsense if self.sensor == "realsense" else self.noise

    def view_count(self, rng: np.random.Generator) -> int:
        if isinstance(self.n_views, int):
            return self.n_views
        return int(rng.integers(self.n_views[0], self.n_views[1] + 1))


@dataclass
class SyntheticScene:
    scene: Scene
    gt_meshes: dict[str, trimesh.Trimesh]  # complete object meshes in the gt frame
    table_mesh: trimesh.Trimesh  # table top and floor, gt frame
    instance: list[np.ndarray]  # per frame (H, W) int32, values as in meta["instance_values"]
    visibility: dict  # as gt/visibility.json
    meta: dict  # as gt/meta.json
    gt_cameras: list[np.ndarray]  # true T_gt_camera per frame (also for unposed scenes)

    @property
    def gt_frame(self) -> str:
        return self.meta["gt_frame"]


# ----------------------------------------------------------------------------- layout

@dataclass
class _Table:
    top_z: float
    floor_z: float
    size_xy: tuple[float, float]
    yaw: float
    centre_xy: np.ndarray

    def meshes(self, thickness: float) -> tuple[trimesh.Trimesh, trimesh.Trimesh]:
        top = trimesh.creation.box(extents=[*self.size_xy, thickness],
                                   transform=_pose(self.yaw, [*self.centre_xy, self.top_z - thickness / 2]))
        floor_thickness = 0.02
        floor = trimesh.creation.box(extents=[4.4, 4.4, floor_thickness],
                                     transform=_pose(self.yaw, [*self.centre_xy, self.floor_z - floor_thickness / 2]))
        return top, floor

    def contains(self, points_xy: np.ndarray, margin: float) -> bool:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        local = (points_xy - self.centre_xy) @ np.array([[c, -s], [s, c]])
        return bool(np.all(np.abs(local) <= np.asarray(self.size_xy) / 2 - margin))


@dataclass
class _PlacedObject:
    sample: ObjectSample
    T_world_object: np.ndarray
    footprint: np.ndarray  # (N, 2) convex hull of the world-frame footprint

    def world_mesh(self) -> trimesh.Trimesh:
        return self.sample.mesh.copy().apply_transform(self.T_world_object)


def _pose(yaw: float, translation) -> np.ndarray:
    T = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    T[:2, :2] = [[c, -s], [s, c]]
    T[:3, 3] = translation
    return T


def _convex_hull_2d(points: np.ndarray) -> np.ndarray:
    return cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def _polygons_overlap(a: np.ndarray, b: np.ndarray, gap: float) -> bool:
    """Separating-axis test for convex polygons, treating them as grown by ``gap``."""
    centre_a, centre_b = a.mean(axis=0), b.mean(axis=0)
    radius_a = np.linalg.norm(a - centre_a, axis=1).max()
    radius_b = np.linalg.norm(b - centre_b, axis=1).max()
    if np.linalg.norm(centre_a - centre_b) > radius_a + radius_b + gap:  # cheap early out
        return False
    for polygon in (a, b):
        edges = np.roll(polygon, -1, axis=0) - polygon
        axes = np.c_[-edges[:, 1], edges[:, 0]]
        norms = np.linalg.norm(axes, axis=1)
        axes = axes[norms > 1e-12] / norms[norms > 1e-12, None]
        pa, pb = a @ axes.T, b @ axes.T
        if np.any((pa.max(0) + gap < pb.min(0)) | (pb.max(0) + gap < pa.min(0))):
            return False
    return True


def _place_objects(samples: list[ObjectSample], table: _Table, centre_xy: np.ndarray, gap: float,
                   rng: np.random.Generator) -> Optional[list[_PlacedObject]]:
    """Slide each object towards the cluster centre from a random direction until it would touch
    an earlier one: tight packing, hence occlusion, without interpenetration."""
    placed: list[_PlacedObject] = []
    for sample in samples:
        yaw = rng.uniform(0, 2 * np.pi)
        c, s = np.cos(yaw), np.sin(yaw)
        hull = _convex_hull_2d(sample.mesh.vertices[:, :2]) @ np.array([[c, s], [-s, c]])
        for _ in range(8):  # directions to try
            direction = rng.normal(size=2)
            direction /= np.linalg.norm(direction)
            position = _slide_in(hull, centre_xy, direction, [p.footprint for p in placed], gap)
            if table.contains(hull + position, margin=0.02):
                break
        else:
            return None
        placed.append(_PlacedObject(sample, _pose(yaw, [*position, table.top_z]), hull + position))
    return placed


def _slide_in(hull: np.ndarray, centre_xy: np.ndarray, direction: np.ndarray, obstacles: list[np.ndarray],
              gap: float, start: float = 0.6, steps: tuple[float, ...] = (0.02, 0.002)) -> np.ndarray:
    def free(distance: float) -> bool:
        moved = hull + centre_xy + distance * direction
        return not any(_polygons_overlap(moved, other, gap) for other in obstacles)

    distance = start
    while not free(distance):  # a large cluster: start further out
        distance += steps[0]
    for step in steps:  # coarse to fine
        while distance >= step and free(distance - step):
            distance -= step
    return centre_xy + distance * direction


# ----------------------------------------------------------------------------- cameras

def _camera(centre: np.ndarray, azimuth: float, config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    elevation = np.deg2rad(rng.uniform(*config.elevation_deg))
    distance = rng.uniform(*config.camera_distance)
    eye = centre + distance * np.array([np.cos(elevation) * np.cos(azimuth),
                                        np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    return look_at(eye, centre + rng.uniform(-0.02, 0.02, size=3))


def _frame0_azimuth(placed: list[_PlacedObject], rng: np.random.Generator) -> float:
    """Look across the cluster: from an occluder's side towards another object, so that one
    hides the other (a uniformly random view often sees every object unoccluded)."""
    if len(placed) < 2:
        return rng.uniform(0, 2 * np.pi)
    hidden, occluder = rng.choice(len(placed), size=2, replace=False)
    across = placed[occluder].T_world_object[:2, 3] - placed[hidden].T_world_object[:2, 3]
    return float(np.arctan2(across[1], across[0]) + np.deg2rad(rng.uniform(-25, 25)))


# ----------------------------------------------------------------------------- visibility

@dataclass
class _TargetChoice:
    index: int  # into the placed objects
    pixel: tuple[int, int]
    erosion: int


def _pixel_erosion(config: SynthConfig) -> int:
    return max(1, int(round(config.target_pixel_erosion * config.width / REFERENCE_SIZE[0])))


def _target_pixel(visible: np.ndarray, erosion: int) -> Optional[tuple[int, int]]:
    """The pixel of the eroded visible mask nearest to the visible mask's centroid."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erosion + 1, 2 * erosion + 1))
    core = cv2.erode(visible.astype(np.uint8), kernel) > 0
    if not core.any():
        return None
    rows, cols = np.nonzero(visible)
    core_rows, core_cols = np.nonzero(core)
    nearest = np.argmin((core_rows - rows.mean()) ** 2 + (core_cols - cols.mean()) ** 2)
    return int(core_cols[nearest]), int(core_rows[nearest])


def _choose_targets(instance: np.ndarray, unoccluded: list[np.ndarray], config: SynthConfig,
                    rng: np.random.Generator) -> list[_TargetChoice]:
    erosion = _pixel_erosion(config)
    min_pixels = config.min_target_area * config.width * config.height
    choices = []
    for k in rng.permutation(len(unoccluded)):
        alone = unoccluded[k]
        alone_pixels = int(alone.sum())
        touches_border = alone[0].any() or alone[-1].any() or alone[:, 0].any() or alone[:, -1].any()
        if alone_pixels < min_pixels or touches_border:
            continue
        visible = instance == INSTANCE_FIRST_OBJECT + k
        occluded = 1.0 - visible.sum() / alone_pixels
        if not config.occlusion[0] <= occluded <= config.occlusion[1]:
            continue
        pixel = _target_pixel(visible, erosion)
        if pixel is not None:
            choices.append(_TargetChoice(int(k), pixel, erosion))
        if len(choices) == config.max_targets:
            break
    return choices


def _unoccluded_mask(object_alone: MeshRenderer, K, T_world_camera, width: int, height: int) -> np.ndarray:
    return object_alone.render_depth_instance(K, T_world_camera, width, height)[1] > 0


def _screening_config(config: SynthConfig, width: int = 160, slack: float = 0.08) -> Optional[SynthConfig]:
    """A low-resolution stand-in with a slightly wider occlusion range, to reject most cameras cheaply."""
    factor = config.width // width
    if factor < 3:
        return None
    return dataclasses.replace(config, width=config.width // factor, height=config.height // factor,
                               occlusion=(max(0.0, config.occlusion[0] - slack), min(1.0, config.occlusion[1] + slack)))


def _frame0_targets(everything: MeshRenderer, objects_alone: list[MeshRenderer], T0: np.ndarray,
                    config: SynthConfig, rng: np.random.Generator) -> list[_TargetChoice]:
    """Targets that camera T0 sees in the configured occlusion range (screened at low resolution first)."""
    choices: list[_TargetChoice] = []
    for pass_config in filter(None, (_screening_config(config), config)):
        K, width, height = pass_config.intrinsics(), pass_config.width, pass_config.height
        _, instance = everything.render_depth_instance(K, T0, width, height)
        unoccluded = [_unoccluded_mask(r, K, T0, width, height) for r in objects_alone]
        choices = _choose_targets(instance, unoccluded, pass_config, rng)
        if not choices:
            return []
    return choices


def _visibility_record(choice: _TargetChoice, per_frame: list[dict]) -> dict:
    fraction = per_frame[0]["visible_fraction"]
    return {"visible_fraction": fraction, "occluded_fraction": round(1.0 - fraction, 4),
            "visible_pixels": per_frame[0]["visible_pixels"], "unoccluded_pixels": per_frame[0]["unoccluded_pixels"],
            "pixel": list(choice.pixel), "pixel_erosion": choice.erosion, "frames": per_frame}


# ----------------------------------------------------------------------------- the generator

def pick_sources(library: list, count: int, procedural_share: Optional[float], rng: np.random.Generator) -> list[int]:
    """Indices into ``library`` of ``count`` objects for one scene."""
    procedural = [i for i, source in enumerate(library) if isinstance(source, ProceduralSource)]
    fixed = [i for i, source in enumerate(library) if not isinstance(source, ProceduralSource)]
    if procedural_share is None or not procedural or not fixed:
        return list(rng.choice(len(library), size=count, replace=count > len(library)))
    return [int(rng.choice(procedural if rng.uniform() < procedural_share else fixed)) for _ in range(count)]


def generate_scene(seed: int, config: Optional[SynthConfig] = None) -> SyntheticScene:
    """One synthetic scene, deterministic in (seed, config); config None = the defaults."""
    config = config if config is not None else SynthConfig()
    # Independent streams, so that e.g. switching depth off leaves the layout unchanged.
    layout_seq, appearance_seq, noise_seq = np.random.SeedSequence(seed).spawn(3)
    layout_rng = np.random.default_rng(layout_seq)
    library = object_library(config.split)
    n_views = config.view_count(layout_rng)

    for attempt in range(1, config.max_attempts + 1):
        top_z = layout_rng.uniform(*config.table_top_z)
        table = _Table(top_z=top_z, floor_z=top_z - layout_rng.uniform(*config.table_height),
                       size_xy=(layout_rng.uniform(*config.table_size_x), layout_rng.uniform(*config.table_size_y)),
                       yaw=layout_rng.uniform(0, 2 * np.pi), centre_xy=layout_rng.uniform(-0.2, 0.2, size=2))
        n_objects = int(layout_rng.integers(config.n_objects[0], config.n_objects[1] + 1))
        picks = pick_sources(library, n_objects, config.procedural_share, layout_rng)
        samples = [library[i].sample(layout_rng) for i in picks]
        cluster_xy = table.centre_xy + layout_rng.uniform(-0.15, 0.15, size=2)
        placed = _place_objects(samples, table, cluster_xy, config.object_gap, layout_rng)
        if placed is None:
            continue
        table_top, floor = table.meshes(config.table_thickness)
        object_meshes = [p.world_mesh() for p in placed]
        bounds = np.array([m.bounds for m in object_meshes])
        centre = (bounds[:, 0].min(axis=0) + bounds[:, 1].max(axis=0)) / 2
        background = [table_top, floor]
        background_ids = [INSTANCE_TABLE, INSTANCE_FLOOR]
        object_ids = [INSTANCE_FIRST_OBJECT + k for k in range(len(placed))]
        everything = MeshRenderer(background + object_meshes, instance_ids=background_ids + object_ids)
        # "Unoccluded" means rendered with only the table; the table cannot hide anything standing
        # on it from cameras above its top, so the object alone gives the same mask, faster.
        objects_alone = [MeshRenderer([m]) for m in object_meshes]
        for _ in range(config.cameras_per_layout):
            azimuth = _frame0_azimuth(placed, layout_rng)
            T0 = _camera(centre, azimuth, config, layout_rng)
            choices = _frame0_targets(everything, objects_alone, T0, config, layout_rng)
            if choices:
                break
        else:
            continue
        cameras = [T0]
        turn = layout_rng.choice([-1.0, 1.0])
        for _ in range(1, n_views):
            azimuth += turn * np.deg2rad(layout_rng.uniform(*config.azimuth_step_deg))
            cameras.append(_camera(centre, azimuth, config, layout_rng))
        return _finish_scene(seed, attempt, config, table, placed, background + object_meshes,
                             background_ids + object_ids, objects_alone, cameras, choices, centre,
                             np.random.default_rng(appearance_seq), np.random.default_rng(noise_seq))
    raise SceneGenerationError(f"seed {seed}: no layout met the target constraints in {config.max_attempts} attempts "
                               f"(occlusion {config.occlusion}, objects {config.n_objects}, split {config.split})")


def _appearances(n_objects: int, table: _Table, rng: np.random.Generator) -> list[ProceduralTexture]:
    wood = [(0.85, 0.76, 0.68), (0.78, 0.62, 0.45), (0.9, 0.87, 0.8), (0.6, 0.45, 0.32)]
    stripes = np.array([np.cos(table.yaw), np.sin(table.yaw), 0.0])
    table_texture = random_texture(rng, base_color=wood[rng.integers(len(wood))], wavelength_m=(0.08, 0.2),
                                   amplitude=0.12, stripe_axis=stripes)
    grey = rng.uniform(0.45, 0.6)
    floor_texture = random_texture(rng, base_color=(grey, grey, grey * rng.uniform(0.95, 1.05)),
                                   wavelength_m=(0.3, 1.0), amplitude=0.05)
    return [table_texture, floor_texture] + [random_texture(rng) for _ in range(n_objects)]


def _finish_scene(seed: int, attempt: int, config: SynthConfig, table: _Table, placed: list[_PlacedObject],
                  world_meshes: list[trimesh.Trimesh], instance_ids: list[int], objects_alone: list[MeshRenderer],
                  cameras: list[np.ndarray], choices: list[_TargetChoice], centre: np.ndarray,
                  appearance_rng: np.random.Generator, noise_rng: np.random.Generator) -> SyntheticScene:
    """Render every view, add sensor noise, and express everything in the gt frame."""
    K, width, height = config.intrinsics(), config.width, config.height
    elevation = np.deg2rad(appearance_rng.uniform(50, 80))
    light_azimuth = appearance_rng.uniform(0, 2 * np.pi)
    lighting = Lighting(direction=(np.cos(elevation) * np.cos(light_azimuth),
                                   np.cos(elevation) * np.sin(light_azimuth), np.sin(elevation)))
    renderer = MeshRenderer(world_meshes, _appearances(len(placed), table, appearance_rng), instance_ids, lighting)

    # Neutral ids in random order, so that an id says nothing about placement or target choice.
    names = [f"obj{i}" for i in appearance_rng.permutation(len(placed))]
    frames, instances = [], []
    per_target_frames: dict[int, list[dict]] = {c.index: [] for c in choices}
    T_gt_world = np.eye(4) if config.posed else invert(cameras[0])
    for i, T_world_camera in enumerate(cameras):
        rgb, depth, instance = renderer.render(K, T_world_camera, width, height)
        noisy = config.depth_sensor().apply(depth, K, noise_rng) if config.depth else None
        frames.append(Frame(rgb=rgb, K=K, depth=noisy, T_world_camera=T_world_camera if config.posed else None,
                            stamp=i * config.seconds_between_views))
        instances.append(instance)
        for choice in choices:
            visible = int(np.sum(instance == INSTANCE_FIRST_OBJECT + choice.index))
            unoccluded = int(_unoccluded_mask(objects_alone[choice.index], K, T_world_camera, width, height).sum())
            per_target_frames[choice.index].append({
                "frame": i, "visible_pixels": visible, "unoccluded_pixels": unoccluded,
                "visible_fraction": round(visible / unoccluded, 4) if unoccluded else 0.0})

    scene = Scene(frames=frames, targets=[Target(id=names[c.index], frame=0, pixel=c.pixel) for c in choices],
                  world_frame="world" if config.posed else "camera_0_optical")
    gt_meshes = {names[k]: m.copy().apply_transform(T_gt_world)
                 for k, m in enumerate(world_meshes[2:])}
    table_mesh = trimesh.util.concatenate(world_meshes[:2]).apply_transform(T_gt_world)
    visibility = {
        "definition": "visible_fraction = pixels of the object in the full render / pixels of the object rendered "
                      "with only the table (other objects removed); frame 0 is the frame the targets were chosen in",
        "targets": {names[c.index]: _visibility_record(c, per_target_frames[c.index]) for c in choices}}
    meta = _meta(seed, attempt, config, table, placed, names, centre, T_gt_world, len(cameras))
    return SyntheticScene(scene=scene, gt_meshes=dict(sorted(gt_meshes.items())), table_mesh=table_mesh,
                          instance=instances, visibility=visibility, meta=meta,
                          gt_cameras=[T_gt_world @ T for T in cameras])


def _meta(seed: int, attempt: int, config: SynthConfig, table: _Table, placed: list[_PlacedObject],
          names: list[str], centre: np.ndarray, T_gt_world: np.ndarray, n_views: int) -> dict:
    def rounded(a, digits=6):
        return np.round(np.asarray(a, dtype=np.float64), digits).tolist()

    meta = {
        "generator": GENERATOR_NAME, "gen_version": GENERATOR_VERSION, "split": config.split, "seed": int(seed),
        "layout_attempt": attempt,
        "table": {"top_z": round(float(table.top_z), 5), "floor_z": round(float(table.floor_z), 5),
                  "size_xy": rounded(table.size_xy, 4), "yaw": round(float(table.yaw), 5)},
        "scene_centre_world": rounded(centre, 5),
        "objects": [{"id": names[k], "source": p.sample.source, "instance_value": INSTANCE_FIRST_OBJECT + k,
                     **({"params": p.sample.params} if p.sample.params else {}),
                     "T_world_object": rounded(p.T_world_object)} for k, p in enumerate(placed)],
        "instance_values": {str(INSTANCE_NOTHING): "nothing", str(INSTANCE_TABLE): "table",
                            str(INSTANCE_FLOOR): "floor"},
        "variant": "posed" if config.posed else "unposed",
        "depth": bool(config.depth),
        "views": n_views,
        "gt_frame": "world" if config.posed else "camera_0_optical",
    }
    if not config.posed:
        meta["T_gt_world"] = rounded(T_gt_world, 9)
    return meta
