"""``amodal3d_launch``: run this package's YAML launch files where ``ros2 launch`` is missing.

The files in ``launch/`` are ordinary ROS 2 YAML launch files (``ros2 launch amodal3d_ros
demo.launch.yaml`` works on a full ROS 2 install). This runner understands the subset they use:

- ``arg`` (name, default, description) and ``let`` (name, value); ``$(var x)``,
  ``$(find-pkg-share pkg)``, ``$(env NAME [default])``, ``$(dirname)``; ``if`` / ``unless``
  on every action;
- ``node``: pkg, exec, name, namespace, ``param`` (``from: file`` or ``name``/``value``),
  ``remap`` (from/to), ``args``, ``ros_args``, ``env`` (name/value), ``on_exit: shutdown``
  (the node is *required*: when it exits, everything is shut down and its exit code is ours);
- ``include`` (file, ``arg`` list); the included file sees the including file's variables.

Each node becomes a subprocess ``<exec> [args] --ros-args -r __node:=NAME -r __ns:=/NS
--params-file F -p k:=v -r from:=to``, in its own process group. SIGINT / SIGTERM are
forwarded (SIGINT, then SIGTERM after ``--sigterm-timeout`` s, then SIGKILL). Exit code: the
required node's code when one ended the launch; 128 + signal number after a signal; otherwise
the first non-zero child code (0 when all succeeded); 2 for a bad launch file or arguments.

Usage: ``amodal3d_launch [amodal3d_ros] demo.launch.yaml scene:=/path out:=demo_out``
(``--print`` shows the commands without starting anything).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

PACKAGE = "amodal3d_ros"
REPO_ROOT = Path(__file__).resolve().parents[3]
# Console scripts of this package, for a source checkout that is not pip-installed.
LOCAL_MODULES = {
    "amodal3d_node": "amodal3d_ros.ros.node",
    "amodal3d_player": "amodal3d_ros.ros.tools.player",
    "amodal3d_recorder": "amodal3d_ros.ros.tools.recorder",
    "amodal3d_launch": "amodal3d_ros.ros.tools.launcher",
}


class LaunchError(ValueError):
    """A launch file or launch argument that cannot be used."""


@dataclass
class NodeSpec:
    pkg: str
    exec: str
    name: Optional[str] = None
    namespace: Optional[str] = None
    params_files: list[str] = field(default_factory=list)
    params: list[tuple[str, Any]] = field(default_factory=list)
    remaps: list[tuple[str, str]] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    ros_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    required: bool = False

    @property
    def label(self) -> str:
        ns = (self.namespace or "").rstrip("/")
        return f"{ns}/{self.name}" if self.name else self.exec

    def ros_arguments(self) -> list[str]:
        out = ["--ros-args"]
        if self.name:
            out += ["-r", f"__node:={self.name}"]
        if self.namespace:
            ns = self.namespace if self.namespace.startswith("/") else "/" + self.namespace
            out += ["-r", f"__ns:={ns.rstrip('/') or '/'}"]
        for f in self.params_files:
            out += ["--params-file", f]
        for name, value in self.params:
            out += ["-p", f"{name}:={param_to_yaml(value)}"]
        for src, dst in self.remaps:
            out += ["-r", f"{src}:={dst}"]
        return out + list(self.ros_args)


# ------------------------------------------------------------------------------ packages
def find_package_share(pkg: str) -> Path:
    """share/ folder of ``pkg``: ament index (AMENT_PREFIX_PATH, then sys.prefix), or this checkout."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        if (Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / pkg).exists():
            return Path(prefix) / "share" / pkg
    if pkg == PACKAGE and (REPO_ROOT / "launch").is_dir() and (REPO_ROOT / "config").is_dir():
        return REPO_ROOT  # a source checkout: launch/ and config/ live at the top
    raise LaunchError(f"package '{pkg}' not found (AMENT_PREFIX_PATH={os.environ.get('AMENT_PREFIX_PATH', '')!r})")


def find_executable(pkg: str, exe: str) -> list[str]:
    """The command for ``exe`` of ``pkg``: lib/<pkg>/<exe> of the ament prefix (like ``ros2 run``),
    this environment's bin/, PATH, or ``python -m`` for this package's own nodes in a checkout."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        cand = Path(prefix) / "lib" / pkg / exe
        if cand.is_file() and os.access(cand, os.X_OK):
            return [str(cand)]
    cand = Path(sys.executable).parent / exe
    if cand.is_file() and os.access(cand, os.X_OK):
        return [str(cand)]
    if pkg == PACKAGE and exe in LOCAL_MODULES:
        return [sys.executable, "-m", LOCAL_MODULES[exe]]
    found = shutil.which(exe)
    if found:
        return [found]
    raise LaunchError(f"executable '{exe}' of package '{pkg}' not found")


# ------------------------------------------------------------------------------ substitutions
_SUBST = re.compile(r"\$\(([^()]*)\)")


def substitute(text: Any, variables: dict[str, str], launch_file: Optional[Path] = None) -> Any:
    if not isinstance(text, str):
        return text

    def one(m: re.Match) -> str:
        parts = shlex.split(m.group(1))
        if not parts:
            raise LaunchError(f"empty substitution in {text!r}")
        kind, rest = parts[0], parts[1:]
        if kind == "var":
            if len(rest) != 1:
                raise LaunchError(f"$(var NAME) takes one name, got {m.group(0)!r}")
            if rest[0] not in variables:
                raise LaunchError(f"launch argument '{rest[0]}' is not set (give {rest[0]}:=VALUE)")
            return str(variables[rest[0]])
        if kind == "find-pkg-share":
            if len(rest) != 1:
                raise LaunchError(f"$(find-pkg-share PKG) takes one package, got {m.group(0)!r}")
            return str(find_package_share(rest[0]))
        if kind == "env":
            if not rest or len(rest) > 2:
                raise LaunchError(f"$(env NAME [DEFAULT]) expected, got {m.group(0)!r}")
            value = os.environ.get(rest[0], rest[1] if len(rest) == 2 else None)
            if value is None:
                raise LaunchError(f"environment variable '{rest[0]}' is not set")
            return value
        if kind == "dirname":
            return str(launch_file.parent) if launch_file else os.getcwd()
        raise LaunchError(f"unsupported substitution {m.group(0)!r} (supported: var, find-pkg-share, env, dirname)")

    prev = None
    while prev != text and _SUBST.search(text):
        prev, text = text, _SUBST.sub(one, text)
    return text


def _guess(value: str) -> Any:
    """Type of a substituted value, as launch_ros guesses it (YAML scalar rules)."""
    try:
        out = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return out if isinstance(out, (bool, int, float, str, list)) and out is not None else value


def param_to_yaml(value: Any) -> str:
    """A value for ``-p name:=VALUE`` (rcl parses it as YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(param_to_yaml(v) for v in value) + "]"
    s = str(value)
    try:
        if s and yaml.safe_load(s) == s and not any(c in s for c in ":#{}[],&*!|>'\"%@`"):
            return s
    except yaml.YAMLError:
        pass
    return "'" + s.replace("'", "''") + "'"


def _truthy(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("true", "1", "yes", "on"):
        return True
    if s in ("false", "0", "no", "off", ""):
        return False
    raise LaunchError(f"{where}: '{value}' is not a boolean")


# ------------------------------------------------------------------------------ parsing
def resolve_launch_file(name: str, pkg: Optional[str] = None) -> Path:
    p = Path(name)
    if pkg is None and p.is_file():
        return p.resolve()
    share = find_package_share(pkg or PACKAGE)
    for cand in (share / "launch" / name, share / name):
        if cand.is_file():
            return cand
    raise LaunchError(f"launch file '{name}' not found (looked in {share / 'launch'})")


def load_launch(path: Path, arguments: Optional[dict[str, str]] = None, _depth: int = 0,
                _variables: Optional[dict[str, str]] = None) -> tuple[list[NodeSpec], dict[str, str]]:
    """Evaluate a YAML launch file: (nodes to start, final variables)."""
    if _depth > 10:
        raise LaunchError("include nesting deeper than 10")
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LaunchError(f"cannot read launch file {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("launch"), list):
        raise LaunchError(f"{path}: expected a mapping with a 'launch:' list")
    scope = _Scope(path, {**(_variables or {}), **(arguments or {})})
    nodes: list[NodeSpec] = []
    for i, entry in enumerate(doc["launch"]):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise LaunchError(f"{path}: launch entry {i} must be a one-key mapping, got {entry!r}")
        (kind, body), = entry.items()
        where = f"{path.name}: {kind} #{i}"
        body = body or {}
        if kind == "arg":
            scope.declare_argument(body, where)
        elif kind == "let":
            if scope.enabled(body, where):
                scope.variables[str(body["name"])] = str(scope.sub(body["value"]))
        elif kind == "include":
            if scope.enabled(body, where):
                nodes += scope.include(body, _depth)
        elif kind == "node":
            if scope.enabled(body, where):
                nodes.append(scope.node(body, where))
        elif kind in ("executable", "group", "set_env", "timer"):
            raise LaunchError(f"{where}: '{kind}' is not supported by amodal3d_launch "
                              "(supported: arg, let, node, include)")
        else:
            raise LaunchError(f"{where}: unknown launch action '{kind}'")
    return nodes, scope.variables


class _Scope:
    """The variables of one launch file being evaluated, and how each action reads them."""

    def __init__(self, path: Path, variables: dict[str, str]):
        self.path = path
        self.variables = variables

    def sub(self, value: Any) -> Any:
        return substitute(value, self.variables, self.path)

    def enabled(self, body: dict, where: str) -> bool:
        if "if" in body and not _truthy(self.sub(body["if"]), f"{where} 'if'"):
            return False
        if "unless" in body and _truthy(self.sub(body["unless"]), f"{where} 'unless'"):
            return False
        return True

    def declare_argument(self, body: dict, where: str) -> None:
        name = body.get("name")
        if not name:
            raise LaunchError(f"{where}: arg without a name")
        if name in self.variables:  # given on the command line or by the including file
            return
        if "default" not in body:
            raise LaunchError(f"launch argument '{name}' is required "
                              f"({body.get('description', 'no description')}); give {name}:=VALUE")
        self.variables[name] = str(self.sub(body["default"]))

    def include(self, body: dict, depth: int) -> list[NodeSpec]:
        child = Path(self.sub(body["file"]))
        if not child.is_absolute():
            child = self.path.parent / child
        arguments = {str(a["name"]): str(self.sub(a["value"])) for a in body.get("arg", []) or []}
        nodes, _ = load_launch(child, arguments, depth + 1, self.variables)
        return nodes

    def node(self, body: dict, where: str) -> NodeSpec:
        for key in ("pkg", "exec"):
            if key not in body:
                raise LaunchError(f"{where}: node needs '{key}'")
        spec = NodeSpec(pkg=str(self.sub(body["pkg"])), exec=str(self.sub(body["exec"])),
                        name=self.sub(body.get("name")), namespace=self.sub(body.get("namespace")))
        for p in body.get("param", []) or []:
            self._add_parameter(spec, p, where)
        for r in body.get("remap", []) or []:
            spec.remaps.append((str(self.sub(r["from"])), str(self.sub(r["to"]))))
        if body.get("args"):
            spec.args = shlex.split(str(self.sub(body["args"])))
        if body.get("ros_args"):
            spec.ros_args = shlex.split(str(self.sub(body["ros_args"])))
        for e in body.get("env", []) or []:
            spec.env[str(e["name"])] = str(self.sub(e["value"]))
        on_exit = str(self.sub(body.get("on_exit", "")) or "")
        if on_exit and on_exit != "shutdown":
            raise LaunchError(f"{where}: on_exit '{on_exit}' is not supported (only 'shutdown')")
        spec.required = on_exit == "shutdown"
        return spec

    def _add_parameter(self, spec: NodeSpec, entry: dict, where: str) -> None:
        if "from" in entry:
            f = Path(self.sub(entry["from"]))
            if not f.is_file():
                raise LaunchError(f"{where}: parameter file {f} not found")
            spec.params_files.append(str(f))
        elif "name" in entry and "value" in entry:
            raw = entry["value"]
            value = self.sub(raw)
            if isinstance(raw, str) and raw != value:
                value = _guess(value)  # a substituted value takes the type its text reads as
            spec.params.append((str(entry["name"]), value))
        else:
            raise LaunchError(f"{where}: param entries need 'from' or 'name' and 'value', got {entry!r}")


def declared_arguments(path: Path) -> list[dict]:
    doc = yaml.safe_load(Path(path).read_text()) or {}
    return [e["arg"] for e in doc.get("launch", []) if isinstance(e, dict) and "arg" in e]


# ------------------------------------------------------------------------------ running
class Launcher:
    def __init__(self, nodes: list[NodeSpec], sigterm_timeout: float = 5.0, log=print):
        self.nodes = nodes
        self.sigterm_timeout = sigterm_timeout
        self.log = log
        self.procs: list[tuple[NodeSpec, subprocess.Popen]] = []
        self._signal: Optional[int] = None

    def command(self, spec: NodeSpec) -> list[str]:
        return find_executable(spec.pkg, spec.exec) + spec.args + spec.ros_arguments()

    def start(self) -> None:
        for spec in self.nodes:
            cmd = self.command(spec)
            env = dict(os.environ)
            env.update(spec.env)
            env.setdefault("PYTHONUNBUFFERED", "1")
            self.log(f"[launch] starting {spec.label}: {shlex.join(cmd)}")
            # Own process group: a terminal Ctrl-C reaches only us, and we stop children in order.
            self.procs.append((spec, subprocess.Popen(cmd, env=env, start_new_session=True)))

    def _on_signal(self, signum, frame) -> None:
        if self._signal is None:
            self._signal = signum
            self.log(f"[launch] {signal.Signals(signum).name} received: shutting down")

    def run(self, timeout: Optional[float] = None) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                self.start()
            except Exception:
                self.shutdown()
                raise
            code = self._supervise(timeout)
        finally:
            self.shutdown()
            for s, h in old.items():
                signal.signal(s, h)
        return code

    def _supervise(self, timeout: Optional[float]) -> int:
        t0 = time.monotonic()
        reported: set[int] = set()
        first_failure = 0
        while True:
            if self._signal is not None:
                return 128 + int(self._signal)
            if timeout is not None and time.monotonic() - t0 > timeout:
                self.log(f"[launch] timeout after {timeout:.0f} s: shutting down")
                return 124
            running = 0
            for i, (spec, proc) in enumerate(self.procs):
                rc = proc.poll()
                if rc is None:
                    running += 1
                    continue
                if i in reported:
                    continue
                reported.add(i)
                self.log(f"[launch] {spec.label} exited with code {rc}" + (" (required)" if spec.required else ""))
                if rc != 0 and not first_failure:
                    first_failure = rc if rc > 0 else 128 - rc
                if spec.required:
                    return rc if rc >= 0 else 128 - rc
            if running == 0:
                return first_failure
            time.sleep(0.1)

    def shutdown(self) -> None:
        """SIGINT to every child still running, then SIGTERM, then SIGKILL."""
        alive = [(s, p) for s, p in self.procs if p.poll() is None]
        stopping = list(alive)
        self._stop(alive)
        for spec, proc in stopping:
            self.log(f"[launch] {spec.label} exited with code {proc.poll()}")

    def _stop(self, alive) -> None:
        for sig, wait in ((signal.SIGINT, self.sigterm_timeout), (signal.SIGTERM, self.sigterm_timeout),
                          (signal.SIGKILL, 5.0)):
            if not alive:
                return
            for spec, proc in alive:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(p.poll() is None for _, p in alive):
                time.sleep(0.05)
            still = [(s, p) for s, p in alive if p.poll() is None]
            if still and sig != signal.SIGKILL:
                self.log(f"[launch] {', '.join(s.label for s, _ in still)} still running after "
                         f"{signal.Signals(sig).name}; escalating")
            alive = still


def parse_cli(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    parser = argparse.ArgumentParser(prog="amodal3d_launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="+", help="[package] launch_file, then name:=value arguments")
    parser.add_argument("--print", action="store_true", help="print the node commands and exit")
    parser.add_argument("--show-args", action="store_true", help="list the launch file's arguments and exit")
    parser.add_argument("--timeout", type=float, default=None, help="shut everything down after this many seconds")
    parser.add_argument("--sigterm-timeout", type=float, default=5.0)
    ns = parser.parse_args(argv)
    args, positional = {}, []
    for tok in ns.target:
        if ":=" in tok:
            k, v = tok.split(":=", 1)
            args[k] = v
        else:
            positional.append(tok)
    if len(positional) == 1:
        ns.pkg, ns.file = None, positional[0]
    elif len(positional) == 2:
        ns.pkg, ns.file = positional
    else:
        parser.error("expected [package] launch_file followed by name:=value arguments")
    return ns, args


def main(argv: Optional[list[str]] = None) -> int:
    ns, args = parse_cli(sys.argv[1:] if argv is None else argv)
    try:
        path = resolve_launch_file(ns.file, ns.pkg)
        if ns.show_args:
            for a in declared_arguments(path):
                print(f"{a['name']}: {a.get('description', '')} (default: {a.get('default', '<required>')!r})")
            return 0
        known = {a["name"] for a in declared_arguments(path)}
        for k in args:
            if k not in known:
                print(f"[launch] warning: '{k}' is not an argument of {path.name} (known: {', '.join(sorted(known))})",
                      file=sys.stderr)
        nodes, _ = load_launch(path, args)
        launcher = Launcher(nodes, sigterm_timeout=ns.sigterm_timeout)
        if ns.print:
            for spec in nodes:
                print(shlex.join(launcher.command(spec)))
            return 0
    except LaunchError as exc:
        print(f"[launch] error: {exc}", file=sys.stderr)
        return 2
    try:
        return launcher.run(ns.timeout)
    except LaunchError as exc:
        print(f"[launch] error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
