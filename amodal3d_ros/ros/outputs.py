"""The node's results on the graph: ``~/objects``, ``~/completed_cloud``, ``~/markers`` and
``~/debug/segmentation``, all latched. Lifecycle publishers: created on configure, they send only
while the node is active, and go on cleanup.
"""
from __future__ import annotations

from sensor_msgs.msg import Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from amodal3d_ros.ros import conversions as conv
from amodal3d_ros.ros import qos
from amodal3d_ros.ros.jobs import ReconstructionRequest


class ResultPublishers:
    def __init__(self, node):
        self._node = node
        # Lifecycle publishers while configured; ~/objects stays None where the messages are not built.
        self._objects = self._cloud = self._markers = self._debug = None

    def create(self) -> None:
        node, latched = self._node, qos.latched_qos()
        self._cloud = node.create_lifecycle_publisher(PointCloud2, "~/completed_cloud", latched)
        self._markers = node.create_lifecycle_publisher(MarkerArray, "~/markers", latched)
        self._debug = node.create_lifecycle_publisher(Image, "~/debug/segmentation", latched)
        try:
            from amodal3d_ros.msg import ReconstructedObjectArray
        except ImportError as exc:
            node.get_logger().error(f"amodal3d_ros messages are not built ({exc}); ~/objects is not published. "
                                    "Run 'make install'.")
            return
        self._objects = node.create_lifecycle_publisher(ReconstructedObjectArray, "~/objects", latched)

    def destroy(self) -> None:
        for publisher in (self._objects, self._cloud, self._markers, self._debug):
            if publisher is not None:
                self._node.destroy_lifecycle_publisher(publisher)
        self._objects = self._cloud = self._markers = self._debug = None

    def publish(self, result, request: ReconstructionRequest, debug_image: bool) -> None:
        kfs, targets = request.keyframes, request.targets
        if self._cloud is None:
            raise RuntimeError("the node is not configured (no publishers)")
        header = conv.make_header(result.frame_id, max(k.frame.stamp for k in kfs))
        if self._objects is not None:
            self._objects.publish(conv.objects_to_array_msg(result.objects, header))
        self._cloud.publish(conv.objects_to_cloud(result.objects, header))
        self._markers.publish(conv.objects_to_markers(result.objects, header))
        if debug_image:
            idx = targets[0].frame if targets else len(kfs) - 1
            img = conv.draw_debug_image(kfs[idx].frame.rgb, result.objects, idx, [t.id for t in targets])
            header = conv.make_header(kfs[idx].frame_id, kfs[idx].frame.stamp)
            self._debug.publish(conv.numpy_to_image(img, "rgb8", header))
