"""``amodal3d eval --real DIR``: the pipeline on real RGB-D frames, judged without ground-truth shapes.

Each scene folder (scene format, posed, world z = 0 on the table) carries hand-checked masks of
every target's observed pixels, ``masks/mask_<target id>.png`` (shared/real/README.md). They are
read here after the pipeline has run, and never given to it. Per target, in the frame it is named in:

- fidelity at 5 / 10 mm: share of the masked depth points within that distance of the output surface;
- free-space violation: share of the output surface more than 10 mm in front of the measured depth
  (and of every measurement within a pixel, so that rounding at silhouettes does not count);
- merge / leak: share of the output surface that lands, at the measured depth (10 mm), on another
  target's mask / on the table (valid depth within 10 mm of z = 0, 3 pixels clear of every target's mask);
- support contact: the lowest mesh point's height above z = 0 (mm, signed);
- plausibility: connected components, watertightness and extents of the mesh.

A target the pipeline does not return counts as missing, with fidelity 0. The bars are issue 22's.
Outputs: ``real.json``, ``real.md``, ``scenes/<scene>.png`` and ``real_contact_sheet.png``.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import trimesh

from .evaluate import _fmt
from .geometry import backproject, backproject_to_world, invert, project, transform_points
from .mesh import sample_surface
from .scene import Scene, read_scene

FIDELITY_TOLERANCES = {"fidelity_5mm": 0.005, "fidelity_10mm": 0.010}
DEPTH_MATCH = 0.010  # m: free-space margin, "at the measured depth", and the table's band about z = 0
CONTACT_TOLERANCE_MM = 5.0
MAX_MERGE_LEAK = 0.15
MIN_FIDELITY_10MM = 0.95
SURFACE_SAMPLES = 20000
BARS = ("merge_leak", "fidelity_10mm", "contact", "one_watertight_component")
SUMMARISED = ("fidelity_5mm", "fidelity_10mm", "free_space_violation", "merge", "leak", "merge_leak",
              "contact_gap_mm", "components")


# ---------------------------------------------------------------------- measures (plain numpy)
def observed_points(depth: np.ndarray, K: np.ndarray, T_world_camera: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """World-frame points (N, 3) of the masked pixels that have a depth measurement."""
    valid = mask & (depth > 0)
    return transform_points(T_world_camera, backproject(depth, K)[valid])


def surface_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unsigned distance (N,) of each point to the mesh surface (not to its vertices); inf without a mesh."""
    if len(faces) == 0:
        return np.full(len(points), np.inf)
    if len(points) == 0:
        return np.zeros(0)
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(faces, np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(np.asarray(points, np.float32))).numpy().astype(np.float64)


def fidelity(distances: np.ndarray, tolerance: float) -> float:
    """Share of observed points within ``tolerance`` of the output surface (0 when there are none)."""
    return float(np.mean(distances <= tolerance)) if len(distances) else 0.0


def project_to_pixels(points_world: np.ndarray, K: np.ndarray, T_world_camera: np.ndarray,
                      shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest pixel (rows, cols), depth z and an ``inside`` flag (in the image, in front) of world points."""
    uv, z = project(K, transform_points(invert(T_world_camera), points_world))
    cols, rows = np.rint(uv[:, 0]).astype(np.int64), np.rint(uv[:, 1]).astype(np.int64)
    inside = (z > 0) & (cols >= 0) & (cols < shape[1]) & (rows >= 0) & (rows < shape[0])
    return np.where(inside, rows, 0), np.where(inside, cols, 0), z, inside


def free_space_violation(samples: np.ndarray, depth: np.ndarray, K: np.ndarray, T_world_camera: np.ndarray,
                         margin: float = DEPTH_MATCH, tolerance_px: int = 1) -> float:
    """Share of surface samples more than ``margin`` in front of the measured depth at their pixel.

    Only samples inside the image on a pixel with depth can violate (elsewhere nothing was
    measured); the share is of all samples, i.e. of the whole output surface. A sample must also
    be in front of every measurement within ``tolerance_px``: a surface at an object's silhouette
    rounds to the pixel beside it half the time, which is not seen-through space.
    """
    if len(samples) == 0:
        return 0.0
    rows, cols, z, inside = project_to_pixels(samples, K, T_world_camera, depth.shape)
    measured = np.where(depth > 0, depth, np.inf).astype(np.float32)
    nearest = cv2.erode(measured, np.ones((2 * tolerance_px + 1,) * 2, np.uint8))  # min over the window
    violating = inside & np.isfinite(measured[rows, cols]) & (z < nearest[rows, cols] - margin)
    return float(np.mean(violating))


def share_on_region(samples: np.ndarray, depth: np.ndarray, K: np.ndarray, T_world_camera: np.ndarray,
                    region: np.ndarray, tolerance: float = DEPTH_MATCH) -> float:
    """Share of surface samples that project onto ``region`` pixels at the measured depth (within
    ``tolerance``): the surface lies on whatever the camera saw there. Of all samples, as above."""
    if len(samples) == 0:
        return 0.0
    rows, cols, z, inside = project_to_pixels(samples, K, T_world_camera, depth.shape)
    measured = depth[rows, cols]
    on_region = inside & region[rows, cols] & (measured > 0) & (np.abs(z - measured) <= tolerance)
    return float(np.mean(on_region))


def table_mask(depth: np.ndarray, K: np.ndarray, T_world_camera: np.ndarray, targets: np.ndarray,
               band: float = DEPTH_MATCH, clearance_px: int = 3) -> np.ndarray:
    """Pixels that see the table: valid depth within ``band`` of the world plane z = 0, outside
    every target's mask (``targets``: their union) grown by ``clearance_px``. Where an object meets
    the table its own lowest pixels are within the band too, and hand masks stop a pixel or two
    short of the outline: that rim is the object's, not table a mesh leaked onto."""
    world = backproject_to_world(depth, K, T_world_camera)
    grown = cv2.dilate(targets.astype(np.uint8), np.ones((2 * clearance_px + 1,) * 2, np.uint8)) > 0
    return (depth > 0) & (np.abs(world[..., 2]) <= band) & ~grown


def support_gap_mm(vertices: np.ndarray) -> float:
    """Height of the lowest mesh point above the table z = 0, in mm (negative: below it)."""
    return 1000.0 * float(np.min(vertices[:, 2]))


def plausibility(vertices: np.ndarray, faces: np.ndarray) -> dict:
    """Connected components, watertightness and extents (mm: length and width along the mesh's
    main horizontal axes, height along z) of a mesh."""
    from .analysis import object_box

    mesh = trimesh.Trimesh(vertices, faces, process=True)  # merged vertices: components are real ones
    _, _, size = object_box(np.asarray(mesh.vertices), np.eye(4))  # world z = 0 is the support
    return {"components": int(mesh.body_count), "watertight": bool(mesh.is_watertight),
            "extents_mm": [round(1000.0 * float(s), 1) for s in size]}


def bars_passed(row: dict) -> dict:
    """Issue 22's bars for one target (a missing target passes none)."""
    if not row["returned"]:
        return {**{bar: False for bar in BARS}, "all": False}
    passed = {"merge_leak": row["merge_leak"] <= MAX_MERGE_LEAK,
              "fidelity_10mm": row["fidelity_10mm"] >= MIN_FIDELITY_10MM,
              "contact": abs(row["contact_gap_mm"]) <= CONTACT_TOLERANCE_MM,
              "one_watertight_component": row["components"] == 1 and row["watertight"]}
    return {**passed, "all": all(passed.values())}


# ---------------------------------------------------------------------- one target, one scene
@dataclass
class TargetView:
    """What a target's measures are taken against: its frame, hand mask, and the others'."""

    depth: np.ndarray
    K: np.ndarray
    T_world_camera: np.ndarray
    mask: np.ndarray
    other_targets: dict[str, np.ndarray]
    table: np.ndarray


def score_target(view: TargetView, vertices: Optional[np.ndarray], faces: Optional[np.ndarray],
                 samples: int = SURFACE_SAMPLES) -> tuple[dict, np.ndarray, np.ndarray]:
    """All measures of one target's output mesh (None: not returned); also its observed points and
    their distances to the mesh, for the pictures."""
    points = observed_points(view.depth, view.K, view.T_world_camera, view.mask)
    row: dict = {"mask_pixels": int(view.mask.sum()), "observed_points": len(points),
                 "returned": vertices is not None and len(faces) > 0}
    if not row["returned"]:
        row.update({name: 0.0 for name in FIDELITY_TOLERANCES})
        return row, points, np.full(len(points), np.inf)
    distances = surface_distance(points, vertices, faces)
    row.update({name: fidelity(distances, tol) for name, tol in FIDELITY_TOLERANCES.items()})
    surface = sample_surface(vertices, faces, samples)
    measured = (view.depth, view.K, view.T_world_camera)
    row["free_space_violation"] = free_space_violation(surface, *measured)
    merges = {other: share_on_region(surface, *measured, mask) for other, mask in view.other_targets.items()}
    union = np.zeros_like(view.mask)
    for mask in view.other_targets.values():
        union |= mask
    row["merge"] = share_on_region(surface, *measured, union)
    row["merge_with"] = max(merges, key=merges.get) if row["merge"] > 0 else None
    row["leak"] = share_on_region(surface, *measured, view.table)
    row["merge_leak"] = row["merge"] + row["leak"]
    row["contact_gap_mm"] = support_gap_mm(vertices)
    row.update(plausibility(vertices, faces))
    return row, points, distances


def scene_folders(folder: Path) -> list[Path]:
    """``folder`` itself when it is a scene, else its sub-folders that are."""
    if (folder / "scene.json").is_file():
        return [folder]
    found = sorted(p for p in folder.iterdir() if (p / "scene.json").is_file()) if folder.is_dir() else []
    if not found:
        raise FileNotFoundError(f"{folder}: no scene folder (scene.json) there or in its sub-folders")
    return found


def read_hand_masks(folder: Path, scene: Scene) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Each target's hand-checked mask (evaluation only) and its name from ``masks/meta.json``."""
    masks = {}
    for target in scene.targets:
        path = folder / "masks" / f"mask_{target.id}.png"
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise FileNotFoundError(f"{path}: no hand mask for target '{target.id}'")
        masks[target.id] = image > 127
    meta_path = folder / "masks" / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    names = {t["id"]: t.get("name", "") for t in meta.get("targets", [])}
    return masks, names


@dataclass
class SceneOutcome:
    name: str
    rows: list[dict]
    seconds: float
    warnings: list[str] = field(default_factory=list)
    error: Optional[str] = None
    picture: Optional[np.ndarray] = None


def evaluate_scene(folder: Path, reconstructor) -> SceneOutcome:
    """Run the pipeline on one scene, then measure every target against its hand mask."""
    scene = read_scene(folder)
    if not scene.posed or not scene.has_depth:
        raise ValueError(f"{folder}: real evaluation needs depth and T_world_camera (world z = 0 on the table)")
    started = time.perf_counter()
    result, error = None, None
    try:
        result = reconstructor.reconstruct_scene(scene)
    except (ValueError, RuntimeError) as exc:  # no target found at all: every target is missing
        error = str(exc)
    seconds = time.perf_counter() - started
    returned = {o.id: o for o in result.objects} if result else {}
    masks, names = read_hand_masks(folder, scene)  # only now: the pipeline never sees them
    rows, overlays = [], []
    for target in scene.targets:
        frame = scene.frames[target.frame]
        in_frame = {t.id: masks[t.id] for t in scene.targets if t.frame == target.frame}
        everything = np.logical_or.reduce(list(in_frame.values()))
        view = TargetView(depth=frame.depth, K=frame.K, T_world_camera=frame.T_world_camera, mask=masks[target.id],
                          other_targets={k: m for k, m in in_frame.items() if k != target.id},
                          table=table_mask(frame.depth, frame.K, frame.T_world_camera, everything))
        obj = returned.get(target.id)
        row, points, distances = score_target(view, None if obj is None else obj.vertices,
                                              None if obj is None else obj.faces)
        row = {"scene": folder.name, "target": target.id, "name": names.get(target.id, ""), **row}
        if obj is None:
            row["error"] = error or _missing_reason(target.id, result.warnings)
        else:
            row.update(completion_method=obj.completion_method, seconds=round(obj.seconds, 3))
        row["passes"] = bars_passed(row)
        rows.append(row)
        overlays.append((points, distances))
    outcome = SceneOutcome(name=folder.name, rows=rows, seconds=seconds, error=error,
                           warnings=list(result.warnings) if result else [])
    outcome.picture = scene_picture(scene, result, masks, rows, overlays)
    return outcome


def _missing_reason(target_id: str, warnings: Sequence[str]) -> str:
    mine = [w for w in warnings if f"'{target_id}'" in w]
    return "; ".join(mine) or "not returned"


# ---------------------------------------------------------------------- aggregate and report
def aggregate(rows: list[dict]) -> dict:
    """Counts of returned targets and of targets passing each bar; median, min and max of each measure
    (fidelity over all targets, missing ones as 0; the rest over returned targets)."""
    returned = [r for r in rows if r["returned"]]
    out: dict = {"targets": len(rows), "returned": len(returned),
                 "missing": [f"{r['scene']}/{r['target']}" for r in rows if not r["returned"]],
                 "passing": {bar: sum(r["passes"][bar] for r in rows) for bar in (*BARS, "all")},
                 "watertight": sum(bool(r.get("watertight")) for r in returned), "stats": {}}
    for name in SUMMARISED:
        values = [r[name] for r in (rows if name in FIDELITY_TOLERANCES else returned) if r.get(name) is not None]
        if values:
            out["stats"][name] = {"median": float(np.median(values)), "min": float(np.min(values)),
                                  "max": float(np.max(values))}
    return out


def markdown(report: dict) -> str:
    agg, n = report["aggregate"], report["aggregate"]["targets"]
    passing = agg["passing"]
    lines = [f"## Real RGB-D scenes: {report['meta']['scenes']} scenes, {n} targets", "",
             "| targets returned | merge+leak <= 15 % | fidelity@10mm >= 0.95 | contact within 5 mm | "
             "one watertight component | all bars |", "|---|---|---|---|---|---|",
             f"| {agg['returned']}/{n} | {passing['merge_leak']}/{n} | {passing['fidelity_10mm']}/{n} | "
             f"{passing['contact']}/{n} | {passing['one_watertight_component']}/{n} | {passing['all']}/{n} |", "",
             "| measure | median | min | max |", "|---|---|---|---|"]
    for name, s in agg["stats"].items():
        lines.append(f"| {name} | {_fmt(s['median'])} | {_fmt(s['min'])} | {_fmt(s['max'])} |")
    lines += ["", "Per target (gap: lowest point above the table; extents: length x width x height):", "",
              "| scene | target | name | F@5mm | F@10mm | free-space | merge (with) | leak | gap mm | "
              "components | watertight | extents mm | bars |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["targets"]:
        if not r["returned"]:
            lines.append(f"| {r['scene']} | {r['target']} | {r['name']} | 0 | 0 | missing: {r.get('error', '')} "
                         "| | | | | | | none |")
            continue
        merge = _fmt(r["merge"]) + (f" ({r['merge_with']})" if r["merge_with"] else "")
        failed = [bar for bar in BARS if not r["passes"][bar]]
        lines.append(f"| {r['scene']} | {r['target']} | {r['name']} | {_fmt(r['fidelity_5mm'])} | "
                     f"{_fmt(r['fidelity_10mm'])} | {_fmt(r['free_space_violation'])} | {merge} | {_fmt(r['leak'])} | "
                     f"{_fmt(r['contact_gap_mm'], 1)} | {r['components']} | {'yes' if r['watertight'] else 'no'} | "
                     f"{' x '.join(f'{e:.0f}' for e in r['extents_mm'])} | "
                     f"{'all' if not failed else 'fails ' + ', '.join(failed)} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- pictures
def orbit_views(T_world_camera: np.ndarray, pivot: np.ndarray, angles_deg=(0, 90, 180)) -> list[np.ndarray]:
    """The input camera turned about the world's vertical axis through ``pivot``: what it saw, the
    side, and the back that no camera saw."""
    views = []
    for angle in np.radians(angles_deg):
        turn = np.eye(4)
        turn[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        turn[:3, 3] = pivot - turn[:3, :3] @ pivot
        views.append(turn @ T_world_camera)
    return views


def fit_intrinsics(points_world: np.ndarray, T_world_camera: np.ndarray, width: int, height: int,
                   margin: float = 0.08) -> np.ndarray:
    """A pinhole K that frames ``points_world`` in a width x height image from this pose."""
    cam = transform_points(invert(T_world_camera), points_world)
    cam = cam[cam[:, 2] > 0.02]
    if len(cam) == 0:
        return np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1.0]])
    x, y = cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2]
    span = max((x.max() - x.min()) / width, (y.max() - y.min()) / height, 1e-6) * (1 + 2 * margin)
    focal = 1.0 / span
    return np.array([[focal, 0, width / 2 - focal * (x.min() + x.max()) / 2],
                     [0, focal, height / 2 - focal * (y.min() + y.max()) / 2], [0, 0, 1.0]])


def distance_colors(distances: np.ndarray) -> np.ndarray:
    """Observed points by their distance to the output: green within 5 mm, yellow 10 mm, red beyond."""
    colors = np.tile(np.array([230, 40, 40], np.uint8), (len(distances), 1))
    colors[distances <= FIDELITY_TOLERANCES["fidelity_10mm"]] = (240, 220, 40)
    colors[distances <= FIDELITY_TOLERANCES["fidelity_5mm"]] = (40, 210, 70)
    return colors


def render_with_points(meshes, colors, overlays, T_view: np.ndarray, K: np.ndarray, size=(320, 240)) -> np.ndarray:
    """The meshes from one camera (the project's renderer), observed points drawn where not hidden by them."""
    from .synth.render import MeshRenderer

    width, height = size
    if meshes:
        image, depth, _ = MeshRenderer(meshes, colors).render(K, T_view, width, height)
    else:
        image, depth = np.full((height, width, 3), 40, np.uint8), np.zeros((height, width), np.float32)
    for points, distances in overlays:
        step = max(1, len(points) // 2500)  # thin the cloud so the surface under it stays visible
        points, distances = points[::step], distances[::step]
        rows, cols, z, inside = project_to_pixels(points, K, T_view, (height, width))
        surface = depth[rows, cols]
        shown = inside & ((surface == 0) | (z <= surface + 0.003))
        order = np.argsort(np.where(np.isfinite(distances), distances, 1.0)[shown])  # the worst drawn last
        rows, cols, distances = rows[shown][order], cols[shown][order], distances[shown][order]
        image[rows, cols] = distance_colors(distances)
        off = distances > FIDELITY_TOLERANCES["fidelity_5mm"]  # the points that fail: 2 x 2 pixel dots
        for dv, du in ((0, 1), (1, 0), (1, 1)):
            image[np.minimum(rows[off] + dv, height - 1), np.minimum(cols[off] + du, width - 1)] = \
                distance_colors(distances[off])
    return image


SCENE_HEADER, SCENE_INPUT_WIDTH = 30, 640  # a scene picture: header over [camera image | outputs]


def scene_picture(scene: Scene, result, masks: dict[str, np.ndarray], rows: list[dict], overlays) -> np.ndarray:
    """Input with the pipeline's masks (tinted, hidden parts hatched) and the hand masks (white
    outlines); the output meshes from the input camera, the side and behind, with the observed
    points coloured by their distance to the output; a legend of each target's measures."""
    from .ros.conversions import draw_debug_image, object_color

    frame_index = scene.targets[0].frame if scene.targets else 0
    frame = scene.frames[frame_index]
    objects = result.objects if result else []
    left = draw_debug_image(frame.rgb, objects, frame_index, [t.id for t in scene.targets])
    for mask in masks.values():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(left, contours, -1, (255, 255, 255), 1)
    left = cv2.resize(left, (SCENE_INPUT_WIDTH, 480))
    meshes = [trimesh.Trimesh(o.vertices, o.faces, process=False) for o in objects]
    # Pale object colours, so that the points' distance colours stand out on them.
    colors = [0.35 * object_color(i) + 0.65 * 200.0 for i in range(len(objects))]
    shown = [m.vertices for m in meshes] + [p for p, _ in overlays if len(p)]
    everything = np.concatenate(shown) if shown else np.zeros((1, 3))
    pivot = (everything.min(axis=0) + everything.max(axis=0)) / 2
    grid = np.full((480, 640, 3), 40, np.uint8)
    for k, (T_view, label) in enumerate(zip(orbit_views(frame.T_world_camera, pivot),
                                            ("input camera", "turned 90 deg", "from behind"))):
        K = fit_intrinsics(everything, T_view, 320, 240)
        tile = np.ascontiguousarray(render_with_points(meshes, colors, overlays, T_view, K))
        cv2.putText(tile, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        y, x = divmod(k, 2)
        grid[y * 240:(y + 1) * 240, x * 320:(x + 1) * 320] = tile
    _draw_legend(grid[240:480, 320:640], rows, [o.id for o in objects])
    picture = np.concatenate([left, grid], axis=1)
    header = np.full((SCENE_HEADER, picture.shape[1], 3), 20, np.uint8)
    passing = sum(r["passes"]["all"] for r in rows)
    returned = sum(r["returned"] for r in rows)
    cv2.putText(header, f"{scene.path.name if scene.path else 'scene'}: {returned}/{len(rows)} returned, "
                f"{passing}/{len(rows)} pass every bar  (points: green <5 mm, yellow <10 mm, red beyond; "
                "white: hand masks)", (8, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([header, picture], axis=0)


def _draw_legend(panel: np.ndarray, rows: list[dict], object_ids: list[str]) -> None:
    from .ros.conversions import object_color

    for i, r in enumerate(rows[:10]):
        color = tuple(int(c) for c in object_color(object_ids.index(r["target"]))) \
            if r["target"] in object_ids else (150, 150, 150)
        text = f"{r['target']}: missing" if not r["returned"] else \
            (f"{r['target']}: F10 {r['fidelity_10mm']:.2f} m+l {r['merge_leak']:.2f} gap {r['contact_gap_mm']:.0f}mm "
             f"{r['components']}c{' wt' if r['watertight'] else ''}")
        cv2.putText(panel, text, (6, 20 + 22 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.42, color, 1, cv2.LINE_AA)


def outputs_only(picture: np.ndarray, title: str) -> np.ndarray:
    """The output half of a scene picture (meshes and legend, no camera image) under its name."""
    grid = picture[SCENE_HEADER:, SCENE_INPUT_WIDTH:]
    header = np.full((SCENE_HEADER, grid.shape[1], 3), 20, np.uint8)
    cv2.putText(header, title, (8, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([header, grid], axis=0)


def contact_sheet(pictures: Sequence[np.ndarray], columns: int = 3, width: int = 520) -> np.ndarray:
    """All scene pictures, small, tiled row by row."""
    small = [cv2.resize(p, (width, int(round(p.shape[0] * width / p.shape[1]))), interpolation=cv2.INTER_AREA)
             for p in pictures]
    height = max(s.shape[0] for s in small)
    rows = -(-len(small) // columns)
    sheet = np.full((rows * height, columns * width, 3), 255, np.uint8)
    for k, s in enumerate(small):
        y, x = divmod(k, columns)
        sheet[y * height:y * height + s.shape[0], x * width:(x + 1) * width] = s
    return sheet


# ---------------------------------------------------------------------- command
def run_real(args: argparse.Namespace) -> int:
    """``amodal3d eval --real DIR``: every scene under DIR, reports into ``--out``."""
    from .cli import pipeline_config
    from .pipeline import Reconstructor

    config = pipeline_config(args)
    folders = scene_folders(args.real)
    out = args.out or Path("build/real_eval")
    (out / "scenes").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    reconstructor = Reconstructor(config)
    outcomes = []
    for folder in folders:
        outcome = evaluate_scene(folder, reconstructor)
        cv2.imwrite(str(out / "scenes" / f"{outcome.name}.png"), cv2.cvtColor(outcome.picture, cv2.COLOR_RGB2BGR))
        outcomes.append(outcome)
    rows = [r for o in outcomes for r in o.rows]
    report = {"meta": {"real": str(args.real), "scenes": len(outcomes), "device": reconstructor.device,
                       "seconds": round(time.perf_counter() - started, 1), "config": config.to_flat_dict()},
              "aggregate": aggregate(rows), "targets": rows,
              "scenes": [{"scene": o.name, "seconds": round(o.seconds, 2), "error": o.error, "warnings": o.warnings,
                          "picture": f"scenes/{o.name}.png"} for o in outcomes]}
    (out / "real.json").write_text(json.dumps(report, indent=1))
    (out / "real.md").write_text(markdown(report))
    sheet = contact_sheet([o.picture for o in outcomes])
    cv2.imwrite(str(out / "real_contact_sheet.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    # The frames' licences allow test use, not copying: this sheet shows only what the pipeline made
    # (meshes, observed points coloured by their distance), so it can be published in docs/.
    sheet = contact_sheet([outputs_only(o.picture, o.name) for o in outcomes], columns=4, width=400)
    cv2.imwrite(str(out / "real_contact_sheet_outputs.jpg"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 80])
    print(markdown(report))
    return 0
