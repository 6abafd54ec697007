"""Unit tests of the YAML launch runner (parsing, substitutions, command lines; no processes)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from amodal3d_ros.ros.tools import launcher as L

from conftest import REPO, ros_env


def test_core_launch_file_commands():
    nodes, variables = L.load_launch(REPO / "launch" / "amodal3d.launch.yaml",
                                     {"namespace": "robot", "rgb_topic": "/cam/color/image_raw"})
    assert len(nodes) == 1
    n = nodes[0]
    assert (n.pkg, n.exec, n.name, n.namespace) == ("amodal3d_ros", "amodal3d_node", "amodal3d", "robot")
    assert n.params_files[0].endswith("config/amodal3d.yaml") and Path(n.params_files[0]).is_file()
    args = n.ros_arguments()
    assert args[:5] == ["--ros-args", "-r", "__node:=amodal3d", "-r", "__ns:=/robot"]
    assert "rgb/image:=/cam/color/image_raw" in args and "depth/image:=depth/image" in args
    assert args[-2:] == ["--log-level", "info"]
    cmd = L.Launcher(nodes).command(n)
    assert "amodal3d_node" in " ".join(cmd) or cmd[-len(args) - 1:][0].endswith("amodal3d_ros.ros.node")


def test_demo_launch_file_include_and_inline_params():
    nodes, _ = L.load_launch(REPO / "launch" / "demo.launch.yaml", {"out": "/tmp/x", "rate": "5"})
    by_name = {n.name: n for n in nodes}
    assert set(by_name) == {"amodal3d", "player", "recorder"}
    assert [Path(f).name for f in by_name["amodal3d"].params_files] == ["amodal3d.yaml", "demo.yaml"]
    player = dict(by_name["player"].params)
    assert player["scene"] == "" and player["rate"] == 5 and player["reconstruct_service"] == "amodal3d/reconstruct"
    assert "-p" in by_name["player"].ros_arguments() and "scene:=''" in by_name["player"].ros_arguments()
    rec = by_name["recorder"]
    assert rec.required and dict(rec.params)["out"] == "/tmp/x" and dict(rec.params)["count"] == 1
    assert ("objects", "amodal3d/objects") in rec.remaps
    assert not by_name["player"].required


def test_substitutions_conditions_and_errors(tmp_path):
    inc = tmp_path / "inc.launch.yaml"
    inc.write_text(yaml.safe_dump({"launch": [
        {"arg": {"name": "who", "default": "nobody"}},
        {"node": {"pkg": "p", "exec": "e", "name": "$(var who)", "args": "--flag $(env AMODAL3D_TEST_ENV fallback)"}},
    ]}))
    main = tmp_path / "main.launch.yaml"
    main.write_text(yaml.safe_dump({"launch": [
        {"arg": {"name": "use_b", "default": "false"}},
        {"let": {"name": "who", "value": "alice"}},
        {"include": {"file": "$(dirname)/inc.launch.yaml", "arg": [{"name": "who", "value": "$(var who)-x"}]}},
        {"node": {"pkg": "p", "exec": "b", "name": "b", "if": "$(var use_b)"}},
        {"node": {"pkg": "p", "exec": "c", "name": "c", "unless": "$(var use_b)",
                  "param": [{"name": "flag", "value": "$(var use_b)"}, {"name": "s", "value": "a:b"}]}},
    ]}))
    nodes, _ = L.load_launch(main)
    assert [n.name for n in nodes] == ["alice-x", "c"]
    assert nodes[0].args == ["--flag", "fallback"]
    assert dict(nodes[1].params) == {"flag": False, "s": "a:b"}
    assert "flag:=false" in nodes[1].ros_arguments() and "s:='a:b'" in nodes[1].ros_arguments()
    nodes, _ = L.load_launch(main, {"use_b": "true"})
    assert [n.name for n in nodes] == ["alice-x", "b"]

    bad = tmp_path / "bad.launch.yaml"
    bad.write_text(yaml.safe_dump({"launch": [{"arg": {"name": "needed"}}]}))
    with pytest.raises(L.LaunchError, match="needed"):
        L.load_launch(bad)
    bad.write_text(yaml.safe_dump({"launch": [{"node": {"pkg": "p", "exec": "$(command ls)"}}]}))
    with pytest.raises(L.LaunchError, match="unsupported substitution"):
        L.load_launch(bad)
    bad.write_text(yaml.safe_dump({"launch": [{"node": {"pkg": "p", "exec": "e", "param": [{"from": "/nope.yaml"}]}}]}))
    with pytest.raises(L.LaunchError, match="not found"):
        L.load_launch(bad)


def test_param_to_yaml_round_trips():
    for value in (True, 3, 2.5, "", "abc", "a:b", "true", "1.0", [1, 2]):
        text = L.param_to_yaml(value)
        assert yaml.safe_load(text) == value, (value, text)


def _write(path: Path, nodes: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"launch": nodes}))
    return path


def test_runner_required_exit_code_and_signals(tmp_path, monkeypatch):
    """Real subprocesses (plain Python, no ROS): exit codes, required nodes, signal forwarding."""
    script = tmp_path / "child.py"
    script.write_text(
        "import signal, sys, time\n"
        "mode = sys.argv[1]\n"
        "signal.signal(signal.SIGINT, lambda *a: sys.exit(0))\n"
        "if mode == 'exit3':\n    time.sleep(0.3); sys.exit(3)\n"
        "while True:\n    time.sleep(0.05)\n")
    exe = tmp_path / "bin"
    exe.mkdir()
    for name in ("exit3", "forever"):
        f = exe / name
        f.write_text(f"#!/bin/sh\nexec {sys.executable} {script} {name}\n")
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{exe}{os.pathsep}{os.environ['PATH']}")
    lf = _write(tmp_path / "t.launch.yaml", [
        {"node": {"pkg": "x", "exec": "forever", "name": "f"}},
        {"node": {"pkg": "x", "exec": "exit3", "name": "r", "on_exit": "shutdown"}},
    ])
    nodes, _ = L.load_launch(lf)
    t0 = time.monotonic()
    code = L.Launcher(nodes, sigterm_timeout=2.0, log=lambda *a: None).run(timeout=20)
    assert code == 3 and time.monotonic() - t0 < 10

    # SIGINT to the launcher process: children are stopped, exit code 128 + 2
    lf2 = _write(tmp_path / "t2.launch.yaml", [{"node": {"pkg": "x", "exec": "forever", "name": "f"}}])
    proc = subprocess.Popen([sys.executable, "-m", "amodal3d_ros.ros.tools.launcher", str(lf2)], env=ros_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "exited with code 0" in out or "SIGINT received" in out


def test_cli_print_and_errors(capsys):
    assert L.main(["--print", str(REPO / "launch" / "amodal3d.launch.yaml"), "namespace:=ns"]) == 0
    out = capsys.readouterr().out
    assert "__ns:=/ns" in out and "--params-file" in out
    assert L.main([str(REPO / "launch" / "nope.launch.yaml")]) == 2
