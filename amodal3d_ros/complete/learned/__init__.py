"""Learned amodal completion: the shipped network, its weights and coarse-to-fine inference."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ...fuse import EvidenceGrid
from ..base import Completer
from .model import CompletionNet, cell_centres

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "completion.safetensors"


class WeightsError(RuntimeError):
    """Missing, unreadable or incompatible model weights."""


def save_weights(model: CompletionNet, path: Path, metadata: dict) -> None:
    """Weights as safetensors (no pickle: safe to load) and a JSON sidecar with version and config."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"model_config": json.dumps(model.config)})
    path.with_suffix(".json").write_text(json.dumps({**metadata, "model_config": model.config}, indent=1))


def load_weights(path: Optional[Path] = None, device: str = "cpu") -> tuple[CompletionNet, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path) if path else DEFAULT_WEIGHTS
    if not path.is_file():
        raise WeightsError(f"completion weights not found: {path} (train them with `amodal3d train` or "
                           "choose a classical method, e.g. --method hull)")
    try:
        with safe_open(str(path), framework="pt") as f:
            config = json.loads((f.metadata() or {}).get("model_config", "{}"))
        # Weights made before the column-prior experiment was dropped record it as switched off.
        if config.pop("prior", False):
            raise ValueError("the model takes the column-prior input, which this version no longer has")
        state = load_file(str(path), device="cpu")
        model = CompletionNet(**config)
        model.load_state_dict(state)
    except Exception as exc:  # corrupt file, wrong architecture: say which file
        raise WeightsError(f"cannot load completion weights {path}: {exc}") from exc
    sidecar = path.with_suffix(".json")
    metadata = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    return model.to(device).eval(), metadata


def evidence_tensor(evidence: EvidenceGrid) -> torch.Tensor:
    return torch.from_numpy(evidence.channels())


def grid_points(resolution: int) -> torch.Tensor:
    """(R^3, 3) cell centres of an R^3 grid in [-1, 1] coordinates, (x, y, z) order, x slowest."""
    return cell_centres(resolution).reshape(-1, 3)


class LearnedCompleter(Completer):
    name = "learned"

    def __init__(self, weights: Optional[str | Path] = None, device: str = "cpu", chunk: int = 65536,
                 rotations: int = 2):
        if rotations not in QUARTER_TURNS:
            raise ValueError(f"rotations must be one of {sorted(QUARTER_TURNS)}, got {rotations}")
        self.device = device
        self.model, self.metadata = load_weights(Path(weights) if weights else None, device)
        self.chunk = chunk
        self.turns = QUARTER_TURNS[rotations]
        self._certainty = 0.7
        # Voxels by which the training labels thickened every wall (0 for models trained without).
        self.thicken = float(self.metadata.get("train_config", {}).get("data", {}).get("thicken", 0.0))

    def surface_offset(self, evidence: EvidenceGrid) -> float:
        """Metres by which predicted surfaces lie outside the true ones (see ``data.thicken``)."""
        return self.thicken * evidence.voxel

    def certainty(self) -> float:
        return self._certainty

    @torch.inference_mode()
    def occupancy(self, evidence: EvidenceGrid, resolution: int) -> np.ndarray:
        """Coarse to fine: the whole grid at R/2, then full resolution only near the surface."""
        ev = evidence_tensor(evidence)[None].to(self.device)
        # Test-time rotations: the grid's z is up, so quarter turns about it are exact symmetries of the
        # physics that training saw (loop.augment); averaging over them smooths the model's quirks.
        turned = torch.cat([torch.rot90(ev, k, dims=(2, 3)) for k in self.turns])
        voxel = torch.full((len(self.turns),), evidence.voxel, device=self.device, dtype=ev.dtype)
        features = self.model.encode(turned, voxel)
        coarse_res = max(8, resolution // 2)
        if coarse_res == evidence.shape[0]:  # the default (64 = 2 x 32): the model's own cells, no sampling
            coarse = torch.stack([torch.rot90(torch.sigmoid(logits), -k, dims=(0, 1)) for k, logits
                                  in zip(self.turns, self.model.decode_cells(features))]).mean(0)
        else:
            coarse = self._query(features, grid_points(coarse_res).to(self.device)).reshape((coarse_res,) * 3)
        prob = F.interpolate(coarse[None, None], size=(resolution,) * 3, mode="trilinear",
                             align_corners=False)[0, 0]
        # Cells whose neighbourhood straddles the surface get their own query.
        band = F.max_pool3d(((prob > 0.1) & (prob < 0.9)).float()[None, None], 3, stride=1, padding=1)[0, 0] > 0
        idx = torch.nonzero(band.reshape(-1)).squeeze(1)
        if len(idx):
            pts = grid_points(resolution).to(self.device)[idx]
            flat = prob.reshape(-1).clone()
            flat[idx] = self._query(features, pts)
            prob = flat.reshape((resolution,) * 3)
        hidden = torch.from_numpy(evidence.unknown).to(self.device)
        if hidden.any():
            p = F.interpolate(coarse[None, None], size=hidden.shape, mode="trilinear",
                              align_corners=False)[0, 0][hidden]
            self._certainty = float(torch.mean(torch.abs(2 * p - 1)))
        return prob.cpu().numpy().astype(np.float32)

    def _query(self, features, points: torch.Tensor) -> torch.Tensor:
        """Occupancy at (P, 3) grid-coordinate points: each turned copy of the evidence is asked at the
        turned points, and the probabilities are averaged."""
        out = []
        for i in range(0, len(points), self.chunk):
            chunk = points[i:i + self.chunk]
            turned = torch.stack([chunk @ quarter_turn(k, chunk.dtype, chunk.device).T for k in self.turns])
            out.append(torch.sigmoid(self.model.decode(features, turned)).mean(0))
        return torch.cat(out)


# rotations -> quarter turns about z
QUARTER_TURNS = {1: (0,), 2: (0, 2), 4: (0, 1, 2, 3)}


def quarter_turn(k: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """(3, 3) rotation by k quarter turns about z: where a grid-coordinate point lands when its
    volume is turned by ``torch.rot90(volume, k, dims=(x, y))``."""
    c, s = ((1, 0), (0, 1), (-1, 0), (0, -1))[k % 4]
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=dtype, device=device)
