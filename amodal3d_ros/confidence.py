"""Per-point confidence of a completed surface: whether each point was measured or inferred, and the
probability that it lies within ``TOLERANCE`` (5 mm) of the true surface.

A point's accuracy is predicted from what the pipeline already has about the place it lies in:

- ``log_distance``: how far it is from the nearest observed point of the object (the measured
  surface), log-scaled: measured surface is pinned, completed surface drifts with distance;
- ``outside_unknown``: whether the space just outside the surface there is unknown (no view saw it)
  or known (seen through, another object, the support): a surface against known space is bounded
  by it, one against unknown space is only the completer's guess;
- ``margin``: the occupancy's drop across the surface there (inside minus outside, one cell either
  side): a sharp step is a confident completion, a shallow one a hedged one;
- ``on_support``: the base, cut by the support plane (measured, though not as the object's surface);
- ``inverse_views``: fewer views, less of the object pinned.

Only features of the point and its neighbourhood: object-wide ones (its size, the share of its surface
measured) fitted better but told the fitted objects apart rather than generalising to others.

A logistic score of these is mapped to a probability by an isotonic table; both are fitted per
completion method on validation scenes that are not the benchmark's (``amodal3d calibrate``,
``confidence_fit.py``) and shipped in ``CALIBRATION_PATH``. A completer without a fitted
calibration gets the rule of its own ``certainty()``: observed points 1, inferred ones that.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.spatial import cKDTree

from .complete.base import Completer
from .complete.constraints import constraint_grid
from .fuse import EvidenceGrid
from .geometry import invert, transform_points
from .result import CONFIDENCE_TOLERANCE

TOLERANCE = CONFIDENCE_TOLERANCE  # m: "accurate" means within this distance of the true surface
FEATURES = ("log_distance", "outside_unknown", "margin", "on_support", "inverse_views")
CALIBRATION_PATH = Path(__file__).parent / "complete" / "learned" / "weights" / "confidence_calibration.json"
CALIBRATION_VERSION = 1
_FAR = 0.1  # m: distances to the measured surface are capped here (nothing beyond is any nearer to it)


@dataclass
class PointConfidence:
    confidence: np.ndarray  # (N,) float32 in [0, 1]: probability of lying within TOLERANCE of the truth
    observed: np.ndarray  # (N,) bool: on the measured surface


@dataclass
class SurfaceEvidence:
    """What the pipeline knows around a completed surface: the evidence grid it was completed from and
    the constrained occupancy (R, R, R) it was meshed from."""

    evidence: EvidenceGrid
    occupancy: np.ndarray

    @property
    def cell(self) -> float:
        """Edge of one occupancy cell (the meshing resolution), metres."""
        return self.evidence.size / self.occupancy.shape[0]

    @property
    def observed_within(self) -> float:
        """A point this near an observed point is on the measured surface: constrain pins that surface to
        within half a cell of the grid it used, and the measurements are a few millimetres apart."""
        return max(constraint_grid(self.evidence, self.occupancy.shape[0]).voxel, 0.003)

    def features(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, len(FEATURES)) features of world-frame points, and each one's distance to the nearest
        observed point (metres, capped at 0.1)."""
        ev = self.evidence
        local = transform_points(invert(ev.T_world_grid), np.asarray(points, np.float64).reshape(-1, 3))
        distance = _distance_to(ev.visible_points, local)
        cell = self.cell
        # Cell-index coordinates of the occupancy grid (cell i's centre at origin + (i + 0.5) cell).
        index = ((local - ev.origin) / cell - 0.5).T
        gradient = np.stack([map_coordinates(g, index, order=1, mode="nearest")
                             for g in np.gradient(self.occupancy.astype(np.float32))], axis=1)
        norm = np.linalg.norm(gradient, axis=1, keepdims=True)
        outward = np.where(norm > 1e-6, -gradient / np.maximum(norm, 1e-6), 0.0)  # occupancy falls outwards
        inside = map_coordinates(self.occupancy, index - outward.T, order=1, mode="nearest")
        outside = map_coordinates(self.occupancy, index + outward.T, order=1, mode="nearest")
        unknown = constraint_grid(ev, self.occupancy.shape[0]).unknown.astype(np.float32)
        unknown_index = ((local + outward * cell - ev.origin) / (ev.size / unknown.shape[0]) - 0.5).T
        columns = {
            "log_distance": np.log1p(distance / 0.001),
            "outside_unknown": map_coordinates(unknown, unknown_index, order=1, mode="nearest"),
            "margin": np.clip(inside - outside, 0.0, 1.0),
            "on_support": (local[:, 2] < cell).astype(np.float64),
            "inverse_views": np.full(len(local), 1.0 / max(ev.views_used, 1)),
        }
        return np.stack([columns[name] for name in FEATURES], axis=1).astype(np.float64), distance

    def assess(self, points: np.ndarray, completer: Completer, rgb_only: bool = False) -> PointConfidence:
        """Confidence and observed flag of world-frame points on the surface ``completer`` completed."""
        features, distance = self.features(points)
        observed = distance <= self.observed_within
        calibration = load_calibration().get(calibration_key(completer.name, rgb_only))
        if calibration is None:
            probability = np.where(observed, 1.0, completer.certainty())
        else:
            probability = calibration.probability(features)
        return PointConfidence(confidence=probability.astype(np.float32), observed=observed)


def calibration_key(method: str, rgb_only: bool) -> str:
    """Calibrations are per method and kind of input: a visual hull's surface is not a measured one."""
    return f"{method}/rgb_only" if rgb_only else method


def _distance_to(reference: np.ndarray, points: np.ndarray) -> np.ndarray:
    if len(reference) == 0 or len(points) == 0:
        return np.full(len(points), _FAR)
    distance = cKDTree(reference).query(points, distance_upper_bound=_FAR)[0]
    return np.minimum(distance, _FAR)


@dataclass
class Calibration:
    """One method's mapping from features to probability: a logistic score, then an isotonic table."""

    coefficients: np.ndarray  # (len(FEATURES),)
    intercept: float
    score_knots: np.ndarray  # increasing logistic scores ...
    probability_knots: np.ndarray  # ... and the non-decreasing probabilities they map to

    def score(self, features: np.ndarray) -> np.ndarray:
        return features @ self.coefficients + self.intercept

    def probability(self, features: np.ndarray) -> np.ndarray:
        return np.clip(np.interp(self.score(features), self.score_knots, self.probability_knots), 0.0, 1.0)

    def to_json(self) -> dict:
        return {"coefficients": dict(zip(FEATURES, np.round(self.coefficients, 6).tolist())),
                "intercept": round(float(self.intercept), 6),
                "isotonic": {"score": np.round(self.score_knots, 6).tolist(),
                             "probability": np.round(self.probability_knots, 6).tolist()}}

    @classmethod
    def from_json(cls, entry: dict) -> "Calibration":
        coefficients = entry["coefficients"]
        if set(coefficients) != set(FEATURES):
            raise ValueError(f"calibration features {sorted(coefficients)} are not this version's {list(FEATURES)}")
        return cls(coefficients=np.array([coefficients[name] for name in FEATURES], np.float64),
                   intercept=float(entry["intercept"]),
                   score_knots=np.asarray(entry["isotonic"]["score"], np.float64),
                   probability_knots=np.asarray(entry["isotonic"]["probability"], np.float64))


@lru_cache(maxsize=4)
def load_calibration(path: Optional[Path] = None) -> dict[str, Calibration]:
    """Method name -> its calibration, from the shipped file (or ``path``); {} if there is none."""
    path = Path(path or CALIBRATION_PATH)
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    if doc.get("version") != CALIBRATION_VERSION or doc.get("tolerance_m") != TOLERANCE:
        raise ValueError(f"{path}: calibration version {doc.get('version')} at tolerance {doc.get('tolerance_m')} m "
                         f"is not this code's ({CALIBRATION_VERSION} at {TOLERANCE} m)")
    return {method: Calibration.from_json(entry) for method, entry in doc["methods"].items()}
