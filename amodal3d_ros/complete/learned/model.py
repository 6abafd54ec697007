"""The completion network: a 3D U-Net over the evidence grid and an implicit occupancy decoder.

The encoder sees every kind of evidence (signed distance to the observed surface, how often it was
observed, seen-through space, unknown space, other objects, the support) plus the cell's position
and the object's scale, so hidden parts are inferred from what occludes them and what was seen
free (Amodal3R's idea of conditioning on visible *and* occluded regions, on a metric grid).
The decoder (IM-NET / LIST style) is queried at arbitrary points with features interpolated from
two scales of the U-Net, the local evidence and a Fourier encoding of the position, so the mesh
resolution is a free parameter.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...fuse import CHANNELS

EVIDENCE_CHANNELS = len(CHANNELS)
EXTRA_CHANNELS = 4  # x, y, z in [-1, 1] and log voxel size


def cell_centres(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n, n, n, 3) centres of the cells of an n^3 grid in [-1, 1] coordinates, indexed and ordered (x, y, z)."""
    axis = torch.linspace(-1 + 1 / n, 1 - 1 / n, n, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU(inplace=True))


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cout), _conv(cout, cout))


class CompletionNet(nn.Module):
    """Sized for a CPU: full-resolution layers are the expensive ones, so they are the thinnest
    (one 3x3x3 convolution in, one 1x1x1 fusion out); depth and width live at coarser scales."""

    def __init__(self, width: int = 16, decoder_hidden: int = 64, fourier_bands: int = 4):
        super().__init__()
        w = width
        cin = EVIDENCE_CHANNELS + EXTRA_CHANNELS
        self.enc1 = _conv(cin, w)  # N
        self.enc2 = _block(w, 2 * w)  # N/2
        self.enc3 = _block(2 * w, 4 * w)  # N/4
        self.bottleneck = _block(4 * w, 4 * w)  # N/8: context of the whole object
        self.dec3 = _block(8 * w, 4 * w)
        self.dec2 = _conv(6 * w, 2 * w)
        self.dec1 = nn.Sequential(nn.Conv3d(3 * w, w, 1), nn.SiLU(inplace=True))
        self.fourier_bands = fourier_bands
        feat = w + 2 * w + EVIDENCE_CHANNELS + 3 * 2 * fourier_bands + 3
        self.decoder = nn.Sequential(
            nn.Linear(feat, decoder_hidden * 2), nn.SiLU(inplace=True),
            nn.Linear(decoder_hidden * 2, decoder_hidden), nn.SiLU(inplace=True),
            nn.Linear(decoder_hidden, 1))
        self.config = {"width": width, "decoder_hidden": decoder_hidden, "fourier_bands": fourier_bands}

    def inputs(self, evidence: torch.Tensor, voxel: torch.Tensor) -> torch.Tensor:
        """Append position and scale channels to (B, C, N, N, N) evidence; ``voxel`` is (B,) metres."""
        b, _, n = evidence.shape[:3]
        pos = cell_centres(n, evidence.device, evidence.dtype).permute(3, 0, 1, 2)[None].expand(b, -1, -1, -1, -1)
        scale = (torch.log(voxel / 0.005)).to(evidence.dtype)[:, None, None, None, None].expand(b, 1, n, n, n)
        return torch.cat([evidence, pos, scale], dim=1)

    def encode(self, evidence: torch.Tensor, voxel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.inputs(evidence, voxel)
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool3d(e1, 2))
        e3 = self.enc3(F.max_pool3d(e2, 2))
        b = self.bottleneck(F.max_pool3d(e3, 2))
        d3 = self.dec3(torch.cat([F.interpolate(b, scale_factor=2, mode="trilinear", align_corners=False), e3], 1))
        d2 = self.dec2(torch.cat([F.interpolate(d3, scale_factor=2, mode="trilinear", align_corners=False), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2, mode="trilinear", align_corners=False), e1], 1))
        return d1, d2, evidence

    def decode(self, features: tuple[torch.Tensor, torch.Tensor, torch.Tensor], points: torch.Tensor) -> torch.Tensor:
        """Occupancy logits (B, P) at ``points`` (B, P, 3) in [-1, 1] grid coordinates (x, y, z)."""
        fine, coarse, evidence = features
        # grid_sample indexes volumes as (z, y, x) = (D, H, W); our grids are indexed (x, y, z).
        g = points.flip(-1)[:, :, None, None, :]
        sampled = [F.grid_sample(v, g, mode="bilinear", padding_mode="border", align_corners=False)[:, :, :, 0, 0]
                   for v in (fine, coarse, evidence)]
        return self._head(torch.cat([s.transpose(1, 2) for s in sampled], dim=-1), points)

    def decode_cells(self, features: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Occupancy logits (B, N, N, N) at the evidence grid's own cell centres: ``decode`` there,
        without sampling (the features already sit on those centres; the coarser level is upsampled
        as grid_sample would interpolate it)."""
        fine, coarse, evidence = features
        b, n = fine.shape[0], fine.shape[-1]
        up = F.interpolate(coarse, size=(n,) * 3, mode="trilinear", align_corners=False)
        local = torch.cat([fine, up, evidence], dim=1).flatten(2).transpose(1, 2)  # x slowest, as grid points
        points = cell_centres(n, fine.device, fine.dtype).reshape(1, -1, 3).expand(b, -1, -1)
        return self._head(local, points).reshape(b, n, n, n)

    def _head(self, local: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Logits from (B, P, C) features at (B, P, 3) points and a Fourier encoding of the points."""
        freqs = (2.0 ** torch.arange(self.fourier_bands, device=points.device, dtype=points.dtype)) * math.pi
        angles = points[..., None] * freqs
        pe = torch.cat([torch.sin(angles), torch.cos(angles)], -1).flatten(2)
        return self.decoder(torch.cat([local, pe, points], dim=-1))[..., 0]

    def forward(self, evidence: torch.Tensor, voxel: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(evidence, voxel), points)
