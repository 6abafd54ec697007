"""The reconstruction pipeline's models (completion network, segment-anything), held while the node is
active: loaded on activate, released (with their GPU memory) on deactivate, reloaded before the next
run when a ``pipeline.*`` parameter changed.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from amodal3d_ros.config import PipelineConfig

ReconstructorFactory = Callable[[PipelineConfig], Any]


def default_reconstructor_factory(config: PipelineConfig):
    from amodal3d_ros.pipeline import Reconstructor  # torch, Open3D: imported only when a pipeline is built

    return Reconstructor(config)


class PipelineModels:
    """One Reconstructor at a time, behind a lock that a running reconstruction holds."""

    def __init__(self, config: PipelineConfig, factory: Optional[ReconstructorFactory], logger):
        self._factory = factory or default_reconstructor_factory
        self._logger = logger
        self._lock = threading.Lock()  # held while the Reconstructor runs or (un)loads
        self._config = config
        self._config_changed = False
        self._reconstructor = None

    @property
    def loaded(self) -> bool:
        return self._reconstructor is not None

    def reconfigure(self, config: PipelineConfig) -> None:
        """New settings: loaded models are rebuilt before the next reconstruction."""
        with self._lock:
            if config != self._config:
                self._config = config
                self._config_changed = True

    def load(self) -> None:
        """Build the Reconstructor (a no-op when it is loaded with the current settings)."""
        with self._lock:
            self._load_locked()

    def release(self) -> None:
        """Drop the Reconstructor and its memory; waits for a running reconstruction."""
        with self._lock:
            self._release_locked()

    def reconstruct(self, frames, targets, world_frame: str):
        with self._lock:
            if self._reconstructor is None:
                raise RuntimeError("the pipeline is not loaded (node inactive)")
            if self._config_changed:
                self._load_locked()
            return self._reconstructor.reconstruct(frames, targets, world_frame=world_frame)

    def _load_locked(self) -> None:
        if self._reconstructor is not None and not self._config_changed:
            return
        self._release_locked()
        t0 = time.monotonic()
        self._config_changed = False
        self._reconstructor = self._factory(self._config)
        self._logger.info(f"pipeline loaded in {time.monotonic() - t0:.2f} s")

    def _release_locked(self) -> None:
        if self._reconstructor is None:
            return
        close = getattr(self._reconstructor, "close", None)
        self._reconstructor = None
        if close is not None:
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - a failing close must not keep the node from deactivating
                self._logger.warning(f"closing the pipeline failed: {exc}")
