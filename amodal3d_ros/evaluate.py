"""``amodal3d eval``: the benchmark of held-out objects and its report.

The benchmark is a set of synthetic scenes (scene format with ``gt/``) of validation-split
objects only (data-split.md), rendered deterministically with 4 views each. Every scene is
scored with its first 1, 2 and 4 views, so view counts compare on identical objects, and with
every completion method on identical segmentation and evidence. Outputs: JSON (per object and
aggregate), a markdown table and PNG plots.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import trimesh
from tqdm import tqdm

from .cli import add_pipeline_arguments, pipeline_config
from .complete import Completer, make_completer
from .geometry import transform_points
from .metrics import ShapeScores, occupancy, score_object, score_points, visible_surface_mask
from .scene import Scene, drop_depth, drop_poses, read_ground_truth, read_scene
from .segment.truth import read_ground_truth_segmentation

VIEW_COUNTS = (1, 2, 4)
MASKS = ("segmenter", "truth")
METRICS = ("fscore_5mm", "fscore_10mm", "chamfer_mm", "iou", "hidden_recall_10mm", "hidden_chamfer_mm")


def build_benchmark(folder: Path, scenes: int, seed: int, progress: bool = True,
                    sensor: str = "structured_light_v1") -> list[Path]:
    """Render (or reuse) the benchmark scenes: val split, 4 views, 640x480, RGB-D, depth from ``sensor``."""
    from .synth import SynthConfig
    from .synth.write import generate_dataset

    config = SynthConfig(split="val", n_views=4, n_objects=(3, 6), sensor=sensor)
    generate_dataset(folder, scenes, seed, config, progress=progress)
    return sorted(p for p in folder.iterdir() if (p / "scene.json").is_file())


def subset(scene: Scene, views: int) -> Scene:
    return Scene(frames=scene.frames[:views], targets=[t for t in scene.targets if t.frame < views],
                 world_frame=scene.world_frame, path=scene.path)


def occlusion_bin(visible_fraction: float) -> str:
    occluded = 1.0 - visible_fraction
    return "30-50%" if occluded < 0.5 else "50-75%" if occluded <= 0.75 else ">75%"


def hidden_mask_fn(folder: Path, scene: Scene):
    """Marks ground-truth surface points that none of the scene's views sees."""
    gt = json.loads((folder / "gt" / "objects.json").read_text())
    meshes = [trimesh.load(folder / o["mesh"], force="mesh") for o in gt]
    if (folder / "gt" / "table.ply").is_file():
        meshes.append(trimesh.load(folder / "gt" / "table.ply", force="mesh"))
    cams = json.loads((folder / "gt" / "cameras.json").read_text())["T_world_camera"]
    Ks = [f.K for f in scene.frames]
    poses = [np.array(T) for T in cams[:len(scene.frames)]]
    sizes = [(f.width, f.height) for f in scene.frames]
    return lambda pts: ~visible_surface_mask(pts, meshes, Ks, poses, sizes)


class TrueShape(Completer):
    """The true shape put through the same evidence grid, constraints and meshing as a completer.

    Not a method: it is what a perfect completion would score with this segmentation and
    fusion, so the distance between it and a method is what completion can still win.
    """
    name = "truth"
    exact = True  # the pipeline does not pool it about a symmetry axis (complete/symmetry.py)

    def __init__(self, mesh: trimesh.Trimesh, thicken: float = 0.0):
        self.mesh = mesh
        self.thicken = thicken  # metres added to every wall, as the training labels do (tests use it)

    def occupancy(self, evidence, resolution: int) -> np.ndarray:
        centres = transform_points(evidence.T_world_grid, evidence.centres(resolution).reshape(-1, 3))
        return occupancy(self.mesh, centres, self.thicken).reshape((resolution,) * 3).astype(np.float32)

    def certainty(self) -> float:
        return 1.0


def evaluate(scene_dirs: list[Path], config, methods: list[str], view_counts=VIEW_COUNTS,
             rgb_only: bool = False, masks: str = "segmenter", progress: bool = True, unposed: bool = False) -> dict:
    """Score every method on every scene and view count; ``rgb_only`` drops the depth images,
    ``unposed`` the camera poses (the outputs, in frame 0's optical frame, are scored after moving
    them by frame 0's true pose, so pose estimation errors count).

    ``masks``: "segmenter" (the configured one, as a robot runs) or "truth" (the rendered instance
    masks), which leaves only completion's own errors.
    """
    if masks not in MASKS:
        raise ValueError(f"masks must be one of {', '.join(MASKS)}, got '{masks}'")
    if masks == "truth" and rgb_only:
        raise ValueError("ground-truth masks need depth: the RGB-only path segments silhouettes itself")
    from .pipeline import Reconstructor

    reconstructor = Reconstructor(config)
    completers = {m: make_completer(replace(config.complete, method=m), reconstructor.device)
                  for m in methods if m not in ("visible", TrueShape.name)}
    rows = []
    bar = tqdm(total=len(scene_dirs) * len(view_counts), desc="benchmark", disable=not progress)
    for folder in scene_dirs:
        full = read_scene(folder)
        if rgb_only:
            full = drop_depth(full)
        T_world_output = full.frames[0].T_world_camera if unposed else np.eye(4)
        if unposed:
            full = drop_poses(full)
        gt_paths = read_ground_truth(folder)
        visibility = json.loads((folder / "gt" / "visibility.json").read_text())["targets"]
        meta_path = folder / "gt" / "meta.json"  # the synthetic generator's record: which mesh each object is
        sources = {o["id"]: o["source"] for o in json.loads(meta_path.read_text())["objects"]} \
            if meta_path.is_file() else {}

        def describe(target, views: int) -> dict:
            return {"scene": folder.name, "object": target.id, "source": sources.get(target.id, "unknown"),
                    "views": views, "occlusion": occlusion_bin(visibility[target.id]["visible_fraction"]),
                    "visible_fraction_gt": visibility[target.id]["visible_fraction"]}

        for views in view_counts:
            if views > len(full.frames):
                bar.update()
                continue
            scene = subset(full, views)
            hidden = hidden_mask_fn(folder, scene)
            t0 = time.perf_counter()
            try:
                given = read_ground_truth_segmentation(folder, scene) if masks == "truth" else None
                prepared = reconstructor.prepare(scene.frames, scene.targets, scene.world_frame, segmentation=given)
            except (ValueError, RuntimeError) as exc:  # e.g. RGB-only target without depth
                rows += [{**describe(target, views), **failed_scores(name, exc)}
                         for target in scene.targets for name in methods]
                bar.update()
                continue
            prep_seconds = time.perf_counter() - t0
            for target in scene.targets:
                gt_mesh = trimesh.load(gt_paths[target.id], force="mesh")
                base = describe(target, views)
                seg_obj = next((o for o in prepared.segmentation.objects if o.id == target.id), None)
                if "visible" in methods:
                    pts = transform_points(T_world_output, seg_obj.points) if seg_obj is not None else np.zeros((0, 3))
                    scores = score_points(pts, gt_mesh, hidden_mask_fn=hidden)
                    rows.append({**base, "method": "visible", **scores.as_dict()})
                for name in [m for m in methods if m != "visible"]:
                    completer = TrueShape(gt_mesh) if name == TrueShape.name else completers[name]
                    t1 = time.perf_counter()
                    result = reconstructor.complete(_only(prepared, target.id), completer)
                    seconds = time.perf_counter() - t1
                    if result.objects:
                        obj = result.objects[0]
                        mesh = trimesh.Trimesh(transform_points(T_world_output, obj.vertices), obj.faces, process=False)
                        scores = score_object(mesh, gt_mesh, hidden_mask_fn=hidden)
                    else:
                        scores = ShapeScores(chamfer_mm=float("inf"), fscore_5mm=0.0, fscore_10mm=0.0, iou=0.0)
                    rows.append({**base, "method": name, "seconds_complete": seconds,
                                 "seconds_prepare": prep_seconds, **scores.as_dict()})
            bar.update()
    bar.close()
    return {"rows": rows, "aggregate": aggregate(rows, methods, view_counts)}


def failed_scores(method: str, error: Exception) -> dict:
    """A failed scene scores zero for every method, so failures are not hidden."""
    return {"method": method, "error": str(error), "fscore_5mm": 0.0, "fscore_10mm": 0.0, "iou": 0.0,
            "hidden_recall_10mm": 0.0, "chamfer_mm": None, "hidden_chamfer_mm": None}


def _only(prepared, object_id: str):
    return replace(prepared, evidence={k: v for k, v in prepared.evidence.items() if k == object_id})


def _mean(values) -> Optional[float]:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def aggregate(rows: list[dict], methods: list[str], view_counts=VIEW_COUNTS) -> dict:
    scored = [r for r in rows if "method" in r]
    out: dict = {"by_method": {}, "by_views": defaultdict(dict), "by_occlusion": defaultdict(dict),
                 "by_object": defaultdict(dict)}
    for m in methods:
        mine = [r for r in scored if r["method"] == m]
        # "Averaged over 1, 2 and 4 views": each view count weighs the same.
        per_view = [{k: _mean(r[k] for r in mine if r["views"] == v) for k in METRICS} for v in view_counts]
        out["by_method"][m] = {k: _mean(p[k] for p in per_view) for k in METRICS}
        out["by_method"][m]["objects"] = len(mine)
        out["by_method"][m]["failures"] = sum(1 for r in mine if "error" in r)
        for v, p in zip(view_counts, per_view):
            out["by_views"][m][str(v)] = p
        for occ in sorted({r["occlusion"] for r in mine}):
            out["by_occlusion"][m][occ] = {k: _mean(r[k] for r in mine if r["occlusion"] == occ) for k in METRICS}
        for source in sorted({r.get("source", "unknown") for r in mine}):
            of_source = [r for r in mine if r.get("source", "unknown") == source]
            out["by_object"][m][source] = {**{k: _mean(r[k] for r in of_source) for k in METRICS},
                                           "runs": len(of_source)}
        secs = [r["seconds_complete"] for r in mine if "seconds_complete" in r]
        if secs:
            out["by_method"][m]["median_seconds_complete"] = float(np.median(secs))
    out["by_views"], out["by_occlusion"], out["by_object"] = \
        dict(out["by_views"]), dict(out["by_occlusion"]), dict(out["by_object"])
    return out


def _fmt(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(report: dict, title: str) -> str:
    agg = report["aggregate"]
    lines = [f"## {title}", "", "| method | F@5mm | F@10mm | Chamfer-L1 (mm) | IoU | hidden recall@10mm | "
             "hidden Chamfer (mm) | objects (failed) | median s/object |", "|---|---|---|---|---|---|---|---|---|"]
    for m, s in agg["by_method"].items():
        lines.append(f"| {m} | {_fmt(s['fscore_5mm'])} | {_fmt(s['fscore_10mm'])} | {_fmt(s['chamfer_mm'], 1)} | "
                     f"{_fmt(s['iou'])} | {_fmt(s['hidden_recall_10mm'])} | {_fmt(s['hidden_chamfer_mm'], 1)} | "
                     f"{s['objects']} ({s['failures']}) | {_fmt(s.get('median_seconds_complete'), 2)} |")
    lines += ["", "By number of views (F@5mm / IoU / hidden Chamfer mm):", "",
              "| method | " + " | ".join(f"{v} view{'s' if v > 1 else ''}" for v in VIEW_COUNTS) + " |",
              "|---|" + "---|" * len(VIEW_COUNTS)]
    for m, per in agg["by_views"].items():
        cells = [f"{_fmt(per.get(str(v), {}).get('fscore_5mm'))} / {_fmt(per.get(str(v), {}).get('iou'))} / "
                 f"{_fmt(per.get(str(v), {}).get('hidden_chamfer_mm'), 1)}" for v in VIEW_COUNTS]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    occs = sorted({o for per in agg["by_occlusion"].values() for o in per})
    lines += ["", "By occlusion of the target in frame 0 (F@5mm / hidden Chamfer mm):", "",
              "| method | " + " | ".join(occs) + " |", "|---|" + "---|" * len(occs)]
    for m, per in agg["by_occlusion"].items():
        cells = [f"{_fmt(per.get(o, {}).get('fscore_5mm'))} / {_fmt(per.get(o, {}).get('hidden_chamfer_mm'), 1)}"
                 for o in occs]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    by_object = agg.get("by_object", {})
    sources = sorted({o for per in by_object.values() for o in per})
    if sources:
        names = list(by_object)
        lines += ["", "By target object, over all view counts (F@5mm / hidden Chamfer mm):", "",
                  "| object | runs | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for source in sources:
            runs = max(by_object[m].get(source, {}).get("runs", 0) for m in names)
            cells = [f"{_fmt(by_object[m].get(source, {}).get('fscore_5mm'))} / "
                     f"{_fmt(by_object[m].get(source, {}).get('hidden_chamfer_mm'), 1)}" for m in names]
            lines.append(f"| {source} | {runs} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = report["aggregate"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, metric, label in zip(axes, ("fscore_5mm", "iou", "hidden_chamfer_mm"),
                                 ("F-score @ 5 mm", "volumetric IoU", "hidden Chamfer (mm, lower is better)")):
        for m, per in agg["by_views"].items():
            ys = [per.get(str(v), {}).get(metric) for v in VIEW_COUNTS]
            if any(y is not None for y in ys):
                ax.plot(VIEW_COUNTS, [np.nan if y is None else y for y in ys], marker="o", label=m)
        ax.set_xlabel("views")
        ax.set_xticks(VIEW_COUNTS)
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .synth.scenes import SENSORS

    parser.add_argument("--bench", type=Path, default=Path("build/benchmark"),
                        help="benchmark folder: scene folders with gt/ (built here if missing)")
    parser.add_argument("--scenes", type=int, default=24, help="scenes to build when the folder is new")
    parser.add_argument("--seed", type=int, default=20261127, help="seed of the benchmark scenes")
    parser.add_argument("--sensor", choices=SENSORS, default=SENSORS[0],
                        help="depth model of the benchmark scenes when the folder is new (synth/sensor.py)")
    parser.add_argument("--methods", default="visible,extrusion,hull,learned,truth",
                        help="comma-separated: visible, extrusion, hull, learned, and truth (the true "
                             "shape through the same evidence and meshing: the ceiling of any completion)")
    parser.add_argument("--views", default="1,2,4", help="view counts to score")
    parser.add_argument("--rgb-only", action="store_true",
                        help="drop the depth images: score the RGB-only path on the same scenes")
    parser.add_argument("--unposed", action="store_true",
                        help="drop the camera poses: score with poses estimated from the views")
    parser.add_argument("--masks", choices=MASKS, default="segmenter",
                        help="segmenter: segment as a robot does; truth: the scenes' rendered instance masks, "
                             "which leaves only the errors of fusion and completion")
    parser.add_argument("--real", type=Path, metavar="DIR",
                        help="real RGB-D scene folders with hand-checked target masks (a folder of them or one): "
                             "run the pipeline on them and score it without ground-truth shapes (evaluate_real.py)")
    parser.add_argument("--out", type=Path, help="where JSON, markdown and plots go (default: docs; with --real: "
                                                 "build/real_eval)")
    parser.add_argument("--name", default="benchmark", help="file stem of the outputs")
    add_pipeline_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.real is not None:
        from .evaluate_real import run_real

        return run_real(args)
    args.out = args.out or Path("docs")
    config = pipeline_config(args)
    scene_dirs = build_benchmark(args.bench, args.scenes, args.seed, sensor=args.sensor)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    views = tuple(int(v) for v in args.views.split(","))
    started = time.time()
    report = evaluate(scene_dirs, config, methods, views, rgb_only=args.rgb_only, masks=args.masks,
                      unposed=args.unposed)
    report["meta"] = {"scenes": len(scene_dirs), "seed": args.seed, "bench": str(args.bench), "methods": methods,
                      "views": list(views), "rgb_only": args.rgb_only, "masks": args.masks, "unposed": args.unposed,
                      "seconds": round(time.time() - started, 1), "split": "val (YCB odd < 30)"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=1))
    title = f"{args.name}: {len(scene_dirs)} scenes of held-out objects" + (" (RGB only)" if args.rgb_only else "") \
        + (" (unposed)" if args.unposed else "") \
        + (" (ground-truth masks)" if args.masks == "truth" else "")
    (args.out / f"{args.name}.md").write_text(markdown(report, title))
    plot(report, args.out / f"{args.name}.png", title)
    print(markdown(report, title))
    return 0
