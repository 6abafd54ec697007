"""QoS profiles shared by the node, the player and the recorder (so that they always match).

- Camera streams (rgb/image, rgb/camera_info, depth/image): best effort, keep last N (default 30:
  a second at 30 Hz, room for a reliable repair's burst), volatile -- the sensor-data profile. A
  best-effort reader matches both best-effort and reliable camera drivers, and under load we
  prefer dropping a stale frame over back-pressure on the driver. Measured here: between
  processes, best effort lost most 640x480 frames published back to back (UDP fragments), so
  recorded data (player, tests, demo) is sent *reliable* and the node's ``qos.reliable``
  parameter makes its camera subscriptions reliable too (demo.yaml sets it). The player always
  publishes reliable: a reliable writer matches both kinds of reader.
- Camera poses (camera_pose): best effort as well (matches any odometry / mocap publisher), but
  a much deeper history (300) since poses are tiny and each one is needed to place a frame: a small
  reliable message lost on the way is resent only at the writer's next heartbeat (Fast DDS: 3 s),
  and the poses after it wait in the history until then.
- Prompts (prompt, from RViz's "Publish Point"): reliable, keep last 10, volatile -- RViz
  publishes reliable and a click must not be lost.
- Results (~/objects, ~/completed_cloud, ~/markers, ~/debug/segmentation): reliable, keep last 1,
  transient local ("latched"): results are rare and expensive; a late subscriber (RViz, the
  recorder, a grasp planner started later) still gets the latest one. Volatile reliable readers
  (RViz's default) are compatible.
- /diagnostics: reliable, keep last 10, volatile (what diagnostic_aggregator expects).
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def camera_qos(depth: int = 5, reliable: bool = False) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def pose_qos(depth: int = 50, reliable: bool = False) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def prompt_qos() -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def diagnostics_qos() -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
