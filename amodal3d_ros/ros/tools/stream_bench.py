"""``amodal3d bench --node``: how many frames of a valid RGB-D stream the amodal3d node keeps.

Publishes a scene's views (the example scene by default: 640x480 rgb8, 16UC1 depth, camera_info and
camera_pose, the four messages of a frame with one stamp) at ``--rate`` Hz for ``--seconds`` into an
amodal3d node in another process, and reads what the node counted on ``/diagnostics``: messages
received per stream, frames synchronised, frames dropped by reason. The node is started here, once
per QoS mode (best effort, its default, and reliable; the publisher is always reliable, which matches
both), or named with ``--attach`` (a running node: its own QoS, its topics in its namespace).

Per run: ``lost before the callbacks`` = published - the node's colour images received (the network,
or a subscription queue that overflowed because the node did not take its messages in time);
``lost in sync`` = colour images received - frames synchronised; ``lost`` = published - synchronised.
Reliable delivery loses nothing on the way, so there every lost frame was lost inside the node.
While streaming, a parameter is read every second (its answer time) and /diagnostics is watched
for gaps; ``--reconstruct-every`` also calls ``~/reconstruct`` periodically (a soak). Medians over
``--repeats``, printed and written as JSON.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

QOS_MODES = ("best_effort", "reliable")
STREAM_TOPICS = {"rgb": "rgb/image", "camera_info": "rgb/camera_info", "depth": "depth/image", "pose": "camera_pose"}
DEFAULT_NAMESPACE = "/amodal3d_bench"
SETTLE_S = 2.0  # s without a change in the node's counters that ends a run
PARTNER_LATE_S = 5.0  # s a partner may take (a small message lost is resent at the next heartbeat: 3 s)
SETTLE_TIMEOUT_S = 30.0  # s a run waits at most for the node to catch up after publishing
PROBE_PERIOD_S = 1.0  # s between two parameter reads while streaming
# Reliable writers keep a sample until it is repaired or pushed out: a small one lost on the way is resent
# only at the next heartbeat (Fast DDS: every 3 s), so theirs hold seconds of a 30 Hz stream.
WRITER_HISTORY = {"rgb": 30, "depth": 30, "camera_info": 150, "pose": 150}
PUBLISH_ORDER = ("pose", "camera_info", "depth", "rgb")  # partners first, the colour image last (as the player)


def add_arguments(parser) -> None:
    """The ``--node`` options of ``amodal3d bench``."""
    g = parser.add_argument_group("node stream benchmark (--node)")
    g.add_argument("--node", action="store_true", help="benchmark the ROS node on a live stream instead of stages")
    g.add_argument("--rate", default="5,10,20,30", help="publishing rates in Hz, comma-separated")
    g.add_argument("--seconds", type=float, default=10.0, help="length of one run (s)")
    g.add_argument("--qos", default="best_effort,reliable", help="the node's camera QoS: best_effort, reliable")
    g.add_argument("--scene", type=Path, help="scene folder to stream (default: the example scene)")
    g.add_argument("--attach", metavar="NODE", help="a running node (e.g. /amodal3d) instead of starting one")
    g.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                   help="a parameter of the node started here (repeatable)")
    g.add_argument("--reconstruct-every", type=float, default=0.0, metavar="S",
                   help="call ~/reconstruct every S seconds while streaming (0: never)")


@dataclass
class RunResult:
    """One run: what was published and what the node counted meanwhile (differences of its totals)."""
    rate: float
    seconds: float
    published: int
    achieved_rate: float
    received: dict[str, int]
    synced: int
    dropped: int
    dropped_reasons: dict[str, int]
    problems: dict[str, int]
    parameter_answer_max_s: float
    diagnostics_gap_max_s: float
    reconstructions: int = 0
    reconstruct_answer_max_s: float = float("nan")
    rss_start_mb: float = float("nan")
    rss_end_mb: float = float("nan")

    @property
    def lost_before_callbacks(self) -> int:
        return self.published - self.received.get("rgb", 0)

    @property
    def lost_in_sync(self) -> int:
        return self.received.get("rgb", 0) - self.synced

    @property
    def lost(self) -> int:
        return self.published - self.synced

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out.update(lost_before_callbacks=self.lost_before_callbacks, lost_in_sync=self.lost_in_sync, lost=self.lost)
        return out


# ---------------------------------------------------------------------------------------------- the stream
class StreamSource:
    """The scene's views as ready messages; ``frame(i, t)`` stamps view ``i % n`` with ``t`` (all four alike)."""

    def __init__(self, scene_folder: Optional[Path], camera_frame: str = "camera_color_optical_frame"):
        from geometry_msgs.msg import PoseStamped

        from amodal3d_ros.ros import conversions as conv
        from amodal3d_ros.ros.tools.player import EXAMPLE_SCENE
        from amodal3d_ros.scene import read_scene

        scene = read_scene(scene_folder or EXAMPLE_SCENE)
        if not scene.posed or not scene.has_depth:
            raise ValueError(f"{scene_folder}: the stream benchmark needs a posed RGB-D scene")
        self.size = (scene.frames[0].width, scene.frames[0].height)
        self.views = []
        for frame in scene.frames:
            header = conv.make_header(camera_frame, 0.0)
            self.views.append({
                "rgb": conv.numpy_to_image(frame.rgb, "rgb8", header),
                "camera_info": conv.K_to_camera_info(frame.K, frame.width, frame.height, header),
                "depth": conv.depth_to_image(frame.depth, "16UC1", header),
                "pose": PoseStamped(header=conv.make_header(scene.world_frame, 0.0),
                                    pose=conv.matrix_to_pose(frame.T_world_camera)),
            })

    def frame(self, index: int, stamp) -> dict[str, Any]:
        msgs = self.views[index % len(self.views)]
        for msg in msgs.values():
            msg.header.stamp = stamp
        return msgs


def parse_node_values(values: list) -> dict[str, str]:
    """/diagnostics key-value pairs of the node's inputs and reconstruction statuses, merged."""
    return {kv.key: kv.value for kv in values}


def counter_deltas(before: dict[str, str], after: dict[str, str], prefix: str) -> dict[str, int]:
    """Growth of every integer value whose key starts with ``prefix`` (the key without it)."""
    out = {}
    for key, value in after.items():
        if key.startswith(prefix):
            try:
                grown = int(value) - int(before.get(key, 0))
            except ValueError:
                continue
            if grown:
                out[key[len(prefix):]] = grown
    return out


def process_rss_mb(pid: Optional[int]) -> float:
    """Resident memory of process ``pid`` in MB (NaN where unknown)."""
    if pid is None:
        return float("nan")
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


# ---------------------------------------------------------------------------------------------- the node
class NodeProcess:
    """The amodal3d node in its own process, with its output in a log file; ended by ``stop()``."""

    def __init__(self, namespace: str, reliable: bool, params: list[str], log_dir: Path,
                 env: Optional[dict[str, str]] = None):
        self.namespace = namespace
        self.log_path = log_dir / f"node_{'reliable' if reliable else 'best_effort'}.log"
        args = ["-p", "pose_source:=topic", "-p", f"qos.reliable:={'true' if reliable else 'false'}",
                "-p", "diagnostics_period:=0.5"]
        for item in params:
            args += ["-p", item]
        cmd = [sys.executable, "-m", "amodal3d_ros.ros.node", "--ros-args", "-r", f"__ns:={namespace}", *args]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


class BenchClient:
    """The benchmark's side of the graph: camera publishers, /diagnostics, the node's services and
    parameters, spun on a thread of its own while the main thread publishes."""

    def __init__(self, node_name: str):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from rcl_interfaces.srv import GetParameters
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import CameraInfo, Image
        from std_srvs.srv import Trigger

        from amodal3d_ros.ros import qos

        self.node_name = node_name.rstrip("/")
        namespace = self.node_name.rsplit("/", 1)[0] or "/"
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("amodal3d_stream_bench", namespace=namespace, context=self.context)
        types = {"rgb": Image, "camera_info": CameraInfo, "depth": Image, "pose": PoseStamped}
        self.publishers = {s: self.node.create_publisher(types[s], topic, qos.camera_qos(WRITER_HISTORY[s], True))
                           for s, topic in STREAM_TOPICS.items()}
        self._lock = threading.Lock()
        self._values: dict[str, str] = {}
        self._diag_times: list[float] = []
        self._diag_seq = 0
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, qos.diagnostics_qos())
        self._reset = self.node.create_client(Trigger, f"{self.node_name}/reset")
        self._reconstruct = self.node.create_client(Trigger, f"{self.node_name}/reconstruct")
        self._get_parameters = self.node.create_client(GetParameters, f"{self.node_name}/get_parameters")
        self._trigger, self._get_parameters_type = Trigger, GetParameters
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - the context ends under a spinning executor at shutdown
            pass

    def _on_diagnostics(self, msg) -> None:
        ours = [st for st in msg.status if st.name.startswith(self.node_name + ":")]
        if not ours:
            return
        with self._lock:
            for st in ours:
                self._values.update(parse_node_values(st.values))
            self._diag_times.append(time.monotonic())
            self._diag_seq += 1

    def values(self) -> tuple[int, dict[str, str]]:
        """(number of /diagnostics messages of the node so far, its latest values)."""
        with self._lock:
            return self._diag_seq, dict(self._values)

    def diagnostics_gap_max(self, since: float) -> float:
        """Longest time without a /diagnostics message of the node since ``since`` (s)."""
        with self._lock:
            times = [since] + [t for t in self._diag_times if t >= since] + [time.monotonic()]
        return float(max(np.diff(times))) if len(times) > 1 else float("nan")

    def wait_ready(self, timeout: float) -> None:
        """Until the node subscribes to every stream, answers ``~/reset`` and publishes /diagnostics."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            subscribed = all(p.get_subscription_count() > 0 for p in self.publishers.values())
            if subscribed and self._reset.service_is_ready() and self.values()[0] > 0:
                time.sleep(1.0)  # discovery completes on the node's side too
                return
            time.sleep(0.1)
        missing = [p.topic_name for p in self.publishers.values() if p.get_subscription_count() == 0]
        raise RuntimeError(f"node {self.node_name} not ready after {timeout:.0f} s (no subscriber on "
                           f"{', '.join(missing) or '-'}; reset service ready: {self._reset.service_is_ready()})")

    def reset(self, timeout: float = 30.0) -> None:
        future = self._reset.call_async(self._trigger.Request())
        if not _wait(future.done, timeout):
            raise RuntimeError(f"{self.node_name}/reset did not answer within {timeout:.0f} s")

    def reconstruct_async(self):
        return self._reconstruct.call_async(self._trigger.Request())

    def get_parameter_async(self, name: str = "sync.tolerance"):
        return self._get_parameters.call_async(self._get_parameters_type.Request(names=[name]))

    def parameter(self, name: str, timeout: float = 10.0):
        future = self.get_parameter_async(name)
        if not _wait(future.done, timeout) or not future.result().values:
            return None
        v = future.result().values[0]
        return {1: v.bool_value, 2: v.integer_value, 3: v.double_value, 4: v.string_value}.get(v.type)

    def now_stamp(self):
        return self.node.get_clock().now().to_msg()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=2)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _wait(condition, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


# ---------------------------------------------------------------------------------------------- one run
class Probes:
    """Parameter reads (every PROBE_PERIOD_S) and ``~/reconstruct`` calls (every ``reconstruct_every`` s)
    issued while streaming, with their answer times."""

    def __init__(self, client: BenchClient, reconstruct_every: float):
        self.client = client
        self.reconstruct_every = reconstruct_every
        self.calls: list[tuple[str, float, Any]] = []  # (kind, sent at, future)
        self._next = {"parameter": 0.0, "reconstruct": reconstruct_every if reconstruct_every > 0 else float("inf")}

    def poll(self, elapsed: float) -> None:
        for kind, due in list(self._next.items()):
            if elapsed >= due:
                call = self.client.get_parameter_async if kind == "parameter" else self.client.reconstruct_async
                future = call()
                sent = time.monotonic()
                future.add_done_callback(lambda f, s=sent: setattr(f, "answered_in", time.monotonic() - s))
                self.calls.append((kind, sent, future))
                self._next[kind] = due + (PROBE_PERIOD_S if kind == "parameter" else self.reconstruct_every)

    def answer_max(self, kind: str) -> float:
        """Longest answer time of ``kind`` calls (unanswered ones count until now)."""
        now = time.monotonic()
        times = [getattr(f, "answered_in", now - sent) for k, sent, f in self.calls if k == kind]
        return float(max(times)) if times else float("nan")

    def answered(self, kind: str) -> int:
        return sum(1 for k, _, f in self.calls if k == kind and f.done())


def publish_stream(client: BenchClient, source: StreamSource, rate: float, seconds: float, probes: Probes,
                   streams: tuple[str, ...] = PUBLISH_ORDER) -> tuple[int, float]:
    """Publish ``rate * seconds`` frames of ``streams`` on a fixed schedule; (frames published, achieved rate)."""
    n = max(1, round(rate * seconds))
    t0 = time.monotonic()
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        msgs = source.frame(i, client.now_stamp())
        for stream in streams:
            client.publishers[stream].publish(msgs[stream])
        probes.poll(time.monotonic() - t0)
    elapsed = time.monotonic() - t0
    return n, (n - 1) / elapsed if elapsed > 0 and n > 1 else float(rate)


def settle(client: BenchClient, keys: tuple[str, ...], timeout: float = SETTLE_TIMEOUT_S) -> dict[str, str]:
    """The node's values once ``keys`` stopped changing for SETTLE_S, or for PARTNER_LATE_S while frames wait
    for partners (still on their way, or lost on the way: then they wait for the next run), or after
    ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    values: dict[str, str] = {}
    while time.monotonic() < deadline:
        _, values = client.values()
        current = tuple(values.get(k) for k in keys)
        if current != last:
            last, since = current, time.monotonic()
        elif time.monotonic() - since >= (SETTLE_S if values.get("frames waiting", "0") == "0" else PARTNER_LATE_S):
            break
        time.sleep(0.1)
    return values


def fresh_values(client: BenchClient, timeout: float = 10.0) -> dict[str, str]:
    """The node's values from a /diagnostics message sent after this call."""
    seq, _ = client.values()
    if not _wait(lambda: client.values()[0] >= seq + 2, timeout):
        raise RuntimeError(f"no /diagnostics from {client.node_name} for {timeout:.0f} s")
    return client.values()[1]


def run_once(client: BenchClient, source: StreamSource, rate: float, seconds: float, pid: Optional[int],
             reconstruct_every: float = 0.0) -> RunResult:
    """Reset the node, stream, wait until it has handled everything, and count."""
    client.reset()
    before = settle(client, ("synced received",), timeout=10.0)
    before = fresh_values(client) if not before else before
    rss_start = process_rss_mb(pid)
    probes = Probes(client, reconstruct_every)
    t_start = time.monotonic()
    published, achieved = publish_stream(client, source, rate, seconds, probes)
    keys = tuple(f"{s} received" for s in (*STREAM_TOPICS, "synced")) + ("dropped frames",)
    after = settle(client, keys)
    _wait(lambda: all(f.done() for _, _, f in probes.calls), 120.0)  # reconstructions still running
    received = counter_deltas(before, after, "")
    not_input = ("dropped", "missing_input")
    return RunResult(
        rate=rate, seconds=seconds, published=published, achieved_rate=achieved,
        received={s: received.get(f"{s} received", 0) for s in STREAM_TOPICS},
        synced=received.get("synced received", 0), dropped=received.get("dropped frames", 0),
        dropped_reasons=counter_deltas(before, after, "dropped: "),
        problems={k: v for k, v in counter_deltas(before, after, "count ").items() if k not in not_input},
        parameter_answer_max_s=probes.answer_max("parameter"),
        diagnostics_gap_max_s=client.diagnostics_gap_max(t_start),
        reconstructions=probes.answered("reconstruct"), reconstruct_answer_max_s=probes.answer_max("reconstruct"),
        rss_start_mb=rss_start, rss_end_mb=process_rss_mb(pid))


# ---------------------------------------------------------------------------------------------- summary
def median_summary(runs: list[RunResult]) -> dict[str, Any]:
    """Medians of a cell's runs (counts and times), dropped reasons summed over the runs."""
    dicts = [r.as_dict() for r in runs]
    out: dict[str, Any] = {}
    for key, value in dicts[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(np.nanmedian([d[key] for d in dicts])) if any(
                np.isfinite(d[key]) for d in dicts) else float("nan")
        elif key == "received":
            out[key] = {s: float(np.median([d[key].get(s, 0) for d in dicts])) for s in STREAM_TOPICS}
    for key in ("dropped_reasons", "problems"):
        total: dict[str, int] = {}
        for d in dicts:
            for reason, n in d[key].items():
                total[reason] = total.get(reason, 0) + n
        out[f"{key}_all_runs"] = total
    out["lost_pct"] = 100.0 * out["lost"] / out["published"] if out["published"] else float("nan")
    out["lost_in_sync_pct"] = 100.0 * out["lost_in_sync"] / max(out["received"]["rgb"], 1)
    return out


def format_row(mode: str, rate: float, m: dict[str, Any]) -> str:
    r = m["received"]
    reasons = ", ".join(f"{k} x{v}" for k, v in sorted(m["dropped_reasons_all_runs"].items())) or "-"
    return (f"{mode:<11} {rate:>5g} Hz  published {m['published']:>5.0f}  received rgb/info/depth/pose "
            f"{r['rgb']:>4.0f}/{r['camera_info']:>4.0f}/{r['depth']:>4.0f}/{r['pose']:>4.0f}  synced "
            f"{m['synced']:>5.0f}  lost {m['lost_pct']:5.1f} % (in sync {m['lost_in_sync_pct']:4.1f} %)  "
            f"param {m['parameter_answer_max_s']:.2f} s  diag gap {m['diagnostics_gap_max_s']:.2f} s  "
            f"dropped: {reasons}")


def _csv(text: str, cast=str) -> list:
    return [cast(x.strip()) for x in str(text).split(",") if x.strip()]


def run(args) -> int:
    """``amodal3d bench --node``: every QoS mode x rate x repeat; a table and the JSON."""
    rates, modes = _csv(args.rate, float), _csv(args.qos)
    bad = [m for m in modes if m not in QOS_MODES]
    if bad or not rates or min(rates) <= 0 or args.seconds <= 0 or args.repeats < 1:
        raise ValueError(f"--qos must name {' or '.join(QOS_MODES)}; --rate, --seconds and --repeats must be > 0")
    if not args.attach:  # a node started here stays on this machine (shared/notes/ros2-from-pypi.md)
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    source = StreamSource(args.scene)
    figures: dict[str, Any] = {
        "scene": str(args.scene or "example_scene"), "size": list(source.size), "seconds": args.seconds,
        "repeats": args.repeats, "reconstruct_every_s": args.reconstruct_every, "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "load_average_start": list(os.getloadavg()),
        "attach": args.attach, "node_params": args.node_param, "modes": {}}
    for mode in ([None] if args.attach else modes):
        name, cells = _bench_mode(args, source, rates, mode)
        figures["modes"][name] = cells
    figures["load_average_end"] = list(os.getloadavg())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1))
    print(f"figures written to {args.json}")
    return 0


def _bench_mode(args, source: StreamSource, rates: list[float], mode: Optional[str]) -> tuple[str, dict]:
    """All rates and repeats against one node: started here for ``mode``, or the attached one."""
    log_dir = Path(tempfile.mkdtemp(prefix="amodal3d-bench-node-"))
    node = None if mode is None else NodeProcess(DEFAULT_NAMESPACE, mode == "reliable", args.node_param, log_dir)
    client = BenchClient(args.attach or f"{DEFAULT_NAMESPACE}/amodal3d")
    cells: dict[str, Any] = {}
    try:
        client.wait_ready(timeout=90.0)
        if mode is None:
            mode = "reliable" if client.parameter("qos.reliable") else "best_effort"
        for rate in rates:
            runs = []
            for _ in range(args.repeats):
                if node is not None and not node.alive():
                    raise RuntimeError(f"the node exited ({node.proc.returncode}):\n{node.log_tail()}")
                runs.append(run_once(client, source, rate, args.seconds, node.pid if node else None,
                                     args.reconstruct_every))
            summary = median_summary(runs)
            cells[f"{rate:g}"] = {"median": summary, "runs": [r.as_dict() for r in runs]}
            print(format_row(mode, rate, summary), flush=True)
    finally:
        client.close()
        if node is not None:
            node.stop()
    return mode, cells
