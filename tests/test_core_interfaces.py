"""The declared stage interfaces (completers, segmenters) and the one pinhole geometry path."""
import numpy as np
import pytest

from amodal3d_ros.complete import METHODS, Completer, make_completer
from amodal3d_ros.config import CompleteConfig, SegmentConfig
from amodal3d_ros.evaluate import TrueShape
from amodal3d_ros.fuse import CHANNELS
from amodal3d_ros.geometry import backproject, backproject_pixels, pixel_rays, project
from amodal3d_ros.segment import Segmenter, SilhouetteSegmenter, make_rgb_only_segmenter, make_segmenter

from test_learned import evidence  # noqa: F401  (the fixture: one target's evidence grid)

K = np.array([[300.0, 0.0, 80.5], [0.0, 310.0, 59.25], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("method", METHODS)
def test_every_completer_declares_the_optional_behaviours(method, evidence):
    completer = make_completer(CompleteConfig(method=method))
    assert isinstance(completer, Completer) and completer.name == method
    assert completer.exact is False
    assert 0.0 <= completer.certainty() <= 1.0
    assert completer.surface_offset(evidence) >= 0.0
    assert TrueShape.exact and issubclass(TrueShape, Completer)


def test_the_segmenter_factory_builds_both_paths():
    backend = make_segmenter(SegmentConfig())
    assert isinstance(backend, Segmenter) and backend.region_masks is None  # the depth backend has no proposals
    rgb_only = make_rgb_only_segmenter(SegmentConfig(), backend)
    assert isinstance(rgb_only, SilhouetteSegmenter) and rgb_only.region_masks is None

    class Proposer(Segmenter):
        def region_masks(self, frame):
            return []

    proposer = Proposer()
    assert make_rgb_only_segmenter(SegmentConfig(), proposer).region_masks == proposer.region_masks


def test_back_projection_and_projection_are_inverse():
    rng = np.random.default_rng(0)
    u, v = rng.integers(0, 160, 50), rng.integers(0, 120, 50)
    z = rng.uniform(0.2, 3.0, 50)
    uv, depth = project(K, backproject_pixels(K, u, v, z))
    np.testing.assert_allclose(uv, np.stack([u, v], axis=1), atol=1e-9)
    np.testing.assert_allclose(depth, z)


def test_a_window_of_pixel_rays_is_the_same_window_of_the_image():
    full = pixel_rays(K, 120, 160)
    np.testing.assert_array_equal(pixel_rays(K, 30, 40, first_pixel=(25, 70)), full[70:100, 25:65])
    depth = np.full((120, 160), 2.0)
    np.testing.assert_array_equal(backproject(depth, K)[5, 7], backproject_pixels(K, np.array([7]), np.array([5]),
                                                                                   np.array([2.0]))[0])


def test_evidence_channels_follow_their_names(evidence):
    channels = evidence.channels()
    assert len(channels) == len(CHANNELS)
    np.testing.assert_array_equal(channels[CHANNELS.index("unknown")], evidence.unknown)
    np.testing.assert_array_equal(channels[CHANNELS.index("below")], evidence.below)
