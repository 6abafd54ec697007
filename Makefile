# amodal3d_ros developer/CI entry points. Everything runs from ./.venv (no `activate`).
#
#   make setup    system packages (root only, if missing), .venv, requirements, the package
#   make install  (re)install the package into .venv when its build inputs changed
#   make test     setup + install, then pytest with an isolated ROS 2 environment
#   make demo     setup + install, then `amodal3d demo --out demo_out`
#   make clean    remove build outputs and generated files (keeps .venv)
#
# The package is installed editable (`pip install --no-deps --no-build-isolation -e .`, see
# setup.py): Python edits under amodal3d_ros/ need no reinstall; msg/, srv/, launch/, config/,
# package.xml, CMakeLists.txt, setup.py changes trigger one (about 11 s when only share files
# changed, about 40 s for a full rebuild of the interfaces).

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
STAMPS := build/stamps
PYTEST_ARGS ?= tests

INSTALL_INPUTS := setup.py pyproject.toml CMakeLists.txt package.xml \
	$(wildcard msg srv launch config msg/*.msg srv/*.srv) \
	$(shell find launch config -type f 2>/dev/null)

# Force a reinstall when the installed result is gone (venv recreated, pip uninstall,
# `git clean`, generated modules deleted) even if the stamp is newer than the inputs.
INSTALL_OK := $(and $(wildcard $(VENV)/bin/amodal3d),\
	$(wildcard $(VENV)/share/ament_index/resource_index/packages/amodal3d_ros),\
	$(wildcard amodal3d_ros/msg/__init__.py),$(wildcard amodal3d_ros/srv/__init__.py))
ifeq ($(strip $(INSTALL_OK)),)
$(shell rm -f $(STAMPS)/install)
endif

# Isolated ROS 2 environment for one run: no multicast on the real network, a per-run domain
# id (1..100, from the shell's PID), logs in a fresh temporary folder.
define ROS_ENV
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; \
export ROS_DOMAIN_ID=$$(( $$$$ % 100 + 1 )); \
export ROS_LOG_DIR="$$(mktemp -d -t amodal3d-roslog.XXXXXX)"; \
export AMENT_PREFIX_PATH="$${AMENT_PREFIX_PATH:-$(abspath $(VENV))}"; \
echo "ROS_DOMAIN_ID=$$ROS_DOMAIN_ID ROS_LOG_DIR=$$ROS_LOG_DIR"
endef

.PHONY: setup install test demo clean distclean system

setup: system $(STAMPS)/requirements $(STAMPS)/install

system:
	@tools/setup_system.sh "$(PYTHON)"

$(VPY):
	$(PYTHON) -m venv $(VENV)

$(STAMPS)/requirements: requirements.txt | $(VPY)
	$(VPY) -m pip install -r requirements.txt
	@mkdir -p $(STAMPS) && touch $@

install: $(STAMPS)/install

$(STAMPS)/install: $(INSTALL_INPUTS) | $(STAMPS)/requirements
	$(VPY) -m pip install --no-deps --no-build-isolation -e .
	@mkdir -p $(STAMPS) && touch $@

test: setup
	@$(ROS_ENV); \
	$(VPY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

demo: setup
	@$(ROS_ENV); \
	$(VENV)/bin/amodal3d demo --out demo_out

clean:
	rm -rf build dist demo_out .pytest_cache *.egg-info
	rm -rf amodal3d_ros/msg amodal3d_ros/srv
	rm -f amodal3d_ros/amodal3d_ros_s__*.so
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
