"""``amodal3d calibrate``: fit the per-point confidence (confidence.py) on scenes with ground truth, and
measure how well calibrated it is.

    amodal3d calibrate                            # fit on build/confidence_fit (80 scenes, seed 4242): the shipped JSON
    amodal3d calibrate --reliability --out docs   # measure it on the benchmark: reliability diagram, ECE

Both run the pipeline as ``amodal3d eval`` does (the configured segmenter, the first 1, 2 and 4 views
of each scene, each method on the same evidence) and label every point of every completed target's
cloud by whether it lies within 5 mm of the true mesh. The fit refuses the benchmark's scenes: the
calibration is fitted on validation-split scenes of another seed and reported on the benchmark.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import trimesh
from tqdm import tqdm

from .cli import add_pipeline_arguments, pipeline_config
from .complete import make_completer
from .confidence import (CALIBRATION_PATH, CALIBRATION_VERSION, FEATURES, TOLERANCE, Calibration, SurfaceEvidence,
                         calibration_key, load_calibration)
from .evaluate import VIEW_COUNTS, build_benchmark, subset
from .scene import drop_depth, read_ground_truth, read_scene

BENCHMARK_SEED = 20261127  # the reported benchmark (docs/BENCHMARKS.md): never fitted on
# (folder, scenes, seed) of the scenes measured by default, and of those fitted on: validation split, another seed
BENCHMARK = (Path("build/benchmark"), 24, BENCHMARK_SEED)
FIT_SCENES = (Path("build/confidence_fit"), 80, 4242)
FIT_METHODS = ("learned", "extrusion", "hull")
KNOTS = 40  # isotonic table size: quantiles of the score, enough for a smooth curve


@dataclass
class Run:
    """One target completed by one method from one view count, every point of its cloud labelled."""

    key: str  # calibration key: method (and "/rgb_only")
    scene: str
    views: int
    features: np.ndarray  # (P, F)
    within: np.ndarray  # (P,) bool: within TOLERANCE of the true surface
    observed: np.ndarray  # (P,) bool
    confidence: np.ndarray  # (P,) the pipeline's output
    uncalibrated: np.ndarray  # (P,) the rule without a calibration: observed 1, inferred the completer's certainty


def true_distance(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Exact distance (metres) of each point to the mesh surface."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(np.asarray(points, np.float32))).numpy().astype(np.float64)


def collect_runs(scene_dirs: list[Path], config, methods, view_counts=VIEW_COUNTS, rgb_only: bool = False,
                 progress: bool = True) -> list[Run]:
    """Every target of every scene at every view count, completed by every method, its points labelled."""
    from .pipeline import Reconstructor

    reconstructor = Reconstructor(config)
    completers = {m: make_completer(replace(config.complete, method=m), reconstructor.device) for m in methods}
    runs = []
    for folder in tqdm(scene_dirs, desc="confidence", disable=not progress):
        full = drop_depth(read_scene(folder)) if rgb_only else read_scene(folder)
        truth = read_ground_truth(folder)
        for views in [v for v in view_counts if v <= len(full.frames)]:
            scene = subset(full, views)
            try:
                prepared = reconstructor.prepare(scene.frames, scene.targets, scene.world_frame)
            except (ValueError, RuntimeError):
                continue  # e.g. one RGB-only view: nothing to assess
            for target in [t for t in scene.targets if t.id in prepared.evidence]:
                evidence = prepared.evidence[target.id]
                gt_mesh = trimesh.load(truth[target.id], force="mesh")
                for completer in completers.values():
                    result = reconstructor.complete(replace(prepared, evidence={target.id: evidence}), completer)
                    if not result.objects:
                        continue
                    obj = result.objects[0]
                    # Completion is deterministic: this is the occupancy the object was meshed from.
                    occupancy, _ = reconstructor.complete_evidence(evidence, completer, prepared.rgb_only)
                    features, _ = SurfaceEvidence(evidence, occupancy).features(obj.cloud)
                    runs.append(Run(key=calibration_key(completer.name, prepared.rgb_only), scene=folder.name,
                                    views=views, features=features,
                                    within=true_distance(gt_mesh, obj.cloud) <= TOLERANCE,
                                    observed=obj.cloud_observed, confidence=obj.cloud_confidence,
                                    uncalibrated=np.where(obj.cloud_observed, 1.0, completer.certainty())))
    return runs


# ---------------------------------------------------------------------------- fitting
def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = 1e-3,
                 steps: int = 50) -> tuple[np.ndarray, float]:
    """Logistic regression by Newton's method (standardised features, a small ridge for stability)."""
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-9
    X = np.hstack([np.ones((len(features), 1)), (features - mean) / scale])
    y = labels.astype(np.float64)
    w = np.zeros(X.shape[1])
    ridge = l2 * len(X) * np.eye(X.shape[1])
    ridge[0, 0] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ w, -30, 30)))
        gradient = X.T @ (p - y) + ridge @ w
        hessian = (X * (p * (1 - p))[:, None]).T @ X + ridge
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    coefficients = w[1:] / scale
    return coefficients, float(w[0] - coefficients @ mean)


def fit_isotonic(scores: np.ndarray, labels: np.ndarray, knots: int = KNOTS) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing map score -> probability (pool adjacent violators on score quantile bins)."""
    order = np.argsort(scores, kind="stable")
    bins = np.array_split(order, min(knots, len(order)))
    centres = np.array([scores[b].mean() for b in bins])
    means = [float(labels[b].mean()) for b in bins]
    weights = [len(b) for b in bins]
    blocks: list[list[float]] = []  # [mean, weight, first bin, last bin]
    for i, (m, w) in enumerate(zip(means, weights)):
        blocks.append([m, w, i, i])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, w1, a, _), (m2, w2, _, b) = blocks[-2], blocks[-1]
            blocks[-2:] = [[(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, a, b]]
    probability = np.empty(len(bins))
    for m, _, a, b in blocks:
        probability[a:b + 1] = m
    return centres, probability


def fit_calibration(runs: list[Run]) -> Calibration:
    features = np.concatenate([r.features for r in runs])
    within = np.concatenate([r.within for r in runs])
    coefficients, intercept = fit_logistic(features, within)
    scores = features @ coefficients + intercept
    score_knots, probability_knots = fit_isotonic(scores, within)
    return Calibration(coefficients, intercept, score_knots, probability_knots)


# ---------------------------------------------------------------------------- reliability
def reliability(confidence: np.ndarray, within: np.ndarray, bins: int = 10) -> dict:
    """Points binned by predicted confidence: per bin the mean prediction and the observed share within
    tolerance; the expected calibration error (bin-weighted gap) and the Brier score."""
    confidence, within = np.asarray(confidence, np.float64), np.asarray(within, np.float64)
    index = np.clip((confidence * bins).astype(int), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        sel = index == b
        if not sel.any():
            continue
        predicted, actual = float(confidence[sel].mean()), float(within[sel].mean())
        ece += sel.mean() * abs(predicted - actual)
        rows.append({"bin": [b / bins, (b + 1) / bins], "points": int(sel.sum()),
                     "predicted": round(predicted, 4), "within_tolerance": round(actual, 4)})
    return {"ece": round(float(ece), 4), "brier": round(float(np.mean((confidence - within) ** 2)), 4),
            "points": int(len(within)), "mean_predicted": round(float(confidence.mean()), 4),
            "share_within": round(float(within.mean()), 4), "bins": rows}


def reliability_report(runs: list[Run]) -> dict:
    """Per calibration key: the shipped confidence and the uncalibrated rule, overall and by view count
    and by observed / inferred points."""
    report = {}
    for key in sorted({r.key for r in runs}):
        mine = [r for r in runs if r.key == key]
        within = np.concatenate([r.within for r in mine])
        observed = np.concatenate([r.observed for r in mine])
        calibrated = np.concatenate([r.confidence for r in mine])
        entry = {"runs": len(mine), "calibrated": reliability(calibrated, within),
                 "uncalibrated": reliability(np.concatenate([r.uncalibrated for r in mine]), within),
                 "by_views": {}, "observed_points": reliability(calibrated[observed], within[observed]),
                 "inferred_points": reliability(calibrated[~observed], within[~observed])}
        for views in sorted({r.views for r in mine}):
            of_views = [r for r in mine if r.views == views]
            entry["by_views"][str(views)] = reliability(np.concatenate([r.confidence for r in of_views]),
                                                        np.concatenate([r.within for r in of_views]))
        report[key] = entry
    return report


def plot_reliability(report: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report), figsize=(4.2 * len(report), 4.2), squeeze=False)
    for ax, (key, entry) in zip(axes[0], report.items()):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfectly calibrated")
        for name, label, style in (("uncalibrated", "before: observed 1, inferred certainty()", ":"),
                                   ("calibrated", "calibrated", "-")):
            rows = entry[name]["bins"]
            x, y = [r["predicted"] for r in rows], [r["within_tolerance"] for r in rows]
            line, = ax.plot(x, y, style, label=f"{label} (ECE {entry[name]['ece']:.3f})")
            # Marker area by the bin's share of the points: most points are measured and confident.
            share = np.array([r["points"] for r in rows]) / entry[name]["points"]
            ax.scatter(x, y, s=8 + 150 * share, color=line.get_color(), zorder=3)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("predicted confidence (bin mean)")
        ax.set_ylabel(f"share of points within {1000 * TOLERANCE:.0f} mm")
        ax.set_title(f"{key}: {entry['runs']} runs, {entry['calibrated']['points']} points")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .synth.scenes import SENSORS

    parser.add_argument("--bench", type=Path, help="scene folders with gt/ (validation split; built here if missing; "
                                                   "default: build/confidence_fit, with --reliability the benchmark)")
    parser.add_argument("--scenes", type=int, help="scenes to build when the folder is new (default: 80, with "
                                                   "--reliability the benchmark's 24)")
    parser.add_argument("--seed", type=int, help="seed of the scenes when the folder is new (default: 4242, with "
                                                 "--reliability the benchmark's)")
    parser.add_argument("--sensor", choices=SENSORS, default=SENSORS[0], help="depth model of new scenes")
    parser.add_argument("--methods", default=",".join(FIT_METHODS), help="comma-separated completion methods")
    parser.add_argument("--views", default="1,2,4", help="view counts")
    parser.add_argument("--rgb-only", action="store_true", help="drop the depth images (the RGB-only path)")
    parser.add_argument("--reliability", action="store_true",
                        help="do not fit: measure the shipped calibration on these scenes (reliability diagram)")
    parser.add_argument("--calibration", type=Path, default=CALIBRATION_PATH,
                        help="calibration file to write (fit; --reliability measures the shipped one)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the reliability JSON and PNG go")
    parser.add_argument("--name", default="confidence_reliability", help="file stem of the reliability outputs")
    add_pipeline_arguments(parser)


def run(args: argparse.Namespace) -> int:
    defaults = BENCHMARK if args.reliability else FIT_SCENES
    args.bench, args.scenes, args.seed = (given if given is not None else default for given, default in
                                          zip((args.bench, args.scenes, args.seed), defaults))
    scene_dirs = build_benchmark(args.bench, args.scenes, args.seed, sensor=args.sensor)
    seed = json.loads((args.bench / "dataset.json").read_text()).get("seed")
    if not args.reliability and seed == BENCHMARK_SEED:
        raise ValueError(f"{args.bench} holds the benchmark's scenes (seed {seed}): fit on other scenes, "
                         "report on these (--reliability)")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    views = tuple(int(v) for v in args.views.split(","))
    started = time.time()
    if args.reliability:
        load_calibration.cache_clear()
        if Path(args.calibration) != CALIBRATION_PATH:
            raise ValueError("--reliability measures the shipped calibration (the one the pipeline loads)")
    runs = collect_runs(scene_dirs, pipeline_config(args), methods, views, rgb_only=args.rgb_only)
    meta = {"scenes": len(scene_dirs), "seed": seed, "bench": str(args.bench), "methods": methods,
            "views": list(views), "rgb_only": args.rgb_only, "tolerance_m": TOLERANCE}
    if args.reliability:
        _write_reliability(args.out, args.name, runs, {**meta, "seconds": round(time.time() - started, 1)})
        return 0
    _write_calibration(args.calibration, runs, meta)
    return 0


def _write_reliability(out: Path, name: str, runs: list[Run], meta: dict) -> None:
    """``out/<name>.json`` and ``.png``: the reliability of the shipped calibration on these runs."""
    fitted = {key: entry["fitted_on"] for key, entry in json.loads(CALIBRATION_PATH.read_text())["methods"].items()}
    report = {"meta": {**meta, "calibration_fitted_on": fitted}, "by_method": reliability_report(runs)}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    fit = next(iter(fitted.values()))
    plot_reliability(report["by_method"], out / f"{name}.png",
                     f"per-point confidence on {meta['scenes']} scenes (seed {meta['seed']}); calibration fitted "
                     f"on {fit['scenes']} other scenes (seed {fit['seed']})")
    print(json.dumps({k: {"ece": v["calibrated"]["ece"], "ece_uncalibrated": v["uncalibrated"]["ece"]}
                      for k, v in report["by_method"].items()}, indent=1))


def _write_calibration(path: Path, runs: list[Run], meta: dict) -> None:
    """Fit every key's calibration and write them, keeping the keys of the file that these runs lack
    (an RGB-only fit adds to the RGB-D ones)."""
    previous = json.loads(path.read_text()) if path.is_file() else {}
    methods = dict(previous.get("methods", {})) if previous.get("version") == CALIBRATION_VERSION else {}
    for key in sorted({r.key for r in runs}):
        mine = [r for r in runs if r.key == key]
        fitted = fit_calibration(mine)
        within = np.concatenate([r.within for r in mine])
        methods[key] = {**fitted.to_json(), "fitted_on": {**meta, "runs": len(mine), "points": int(len(within)),
                                                          "share_within": round(float(within.mean()), 4)}}
    doc = {"version": CALIBRATION_VERSION, "tolerance_m": TOLERANCE, "features": list(FEATURES),
           "command": "amodal3d calibrate (amodal3d_ros/confidence_fit.py)", "methods": methods}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    load_calibration.cache_clear()
    print(f"wrote {path}: " + ", ".join(f"{k} ({v['fitted_on']['runs']} runs)" for k, v in methods.items()))
