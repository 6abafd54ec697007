#!/usr/bin/env bash
# Install the Debian packages amodal3d_ros needs, only those missing, only when root with apt.
# Idempotent and quick when nothing is missing (dpkg -s / command -v checks, no apt-get call).
#   usage: tools/setup_system.sh PYTHON
#   - libusb-1.0-0: open3d imports only with it; libgl1, libglib2.0-0: opencv
#   - cmake, g++: build of msg/ and srv/ (rosidl_generate_interfaces)
#   - pythonX.Y-venv / pythonX.Y-dev: Debian's own interpreter lacks ensurepip / Python.h
set -euo pipefail
py=${1:-python3.11}

missing=()
for p in libusb-1.0-0 libgl1 libglib2.0-0; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v c++ >/dev/null 2>&1 || missing+=(g++)

if command -v "$py" >/dev/null 2>&1; then
  ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$(command -v "$py")" = "/usr/bin/$py" ] || [ "$(command -v "$py")" = "/usr/bin/python$ver" ]; then
    "$py" -c 'import ensurepip' >/dev/null 2>&1 || missing+=("python$ver-venv")
    "$py" -c 'import os, sysconfig; import sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
      || missing+=("python$ver-dev")
  fi
else
  missing+=(python3.11 python3.11-venv python3.11-dev)
fi

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup_system: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup_system: WARNING: missing system packages: ${missing[*]}" >&2
  echo "setup_system: install them with: sudo apt-get install -y ${missing[*]}" >&2
fi
