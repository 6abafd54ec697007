"""amodal3d_ros: amodal 3D reconstruction of table-top objects for grasp planning.

A ROS-free core (segment -> poses -> fuse -> complete -> mesh) with thin shells: the
`amodal3d` CLI and the ROS 2 nodes under `amodal3d_ros.ros`. The ROS interfaces are
`amodal3d_ros.msg` and `amodal3d_ros.srv` (generated at install time from msg/ and srv/).
"""

__version__ = "0.1.0"
