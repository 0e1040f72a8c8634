# One command for the demo, one for every check. Both install what they need:
# Debian packages (CNI reference plugins, iproute2, openssl, binutils for
# PyInstaller; containerd, runc, busybox-static and gcc for the real nodes), a
# virtualenv with the package and its test extras, and the development tooling
# (devtools/, the whereabouts-py-dev command), the pinned control-plane and node
# binaries, Multus and the Go whereabouts plugin that the interop tests run next
# to ours (compiled once with Go, then cached in ~/.cache/whereabouts-py),
# the nodes' pause and lab-tools images and the product image (`make image`:
# buildah, podman and mmdebstrap build it from the Dockerfile on a Debian base
# made here, with no registry).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := containernetworking-plugins iproute2 openssl ca-certificates binutils \
	containerd runc busybox-static gcc libc6-dev iptables util-linux \
	buildah podman mmdebstrap
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck imports unit setup system-deps controlplane node-binaries image clean

demo: setup
	$(BIN)/whereabouts-py-dev demo

test: setup lint typecheck imports unit

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v go >/dev/null || { echo "Go (>= 1.26) is needed once to build the control plane"; exit 1; }

$(STAMP): pyproject.toml devtools/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' -e ./devtools
	touch $(STAMP)

controlplane: $(STAMP)
	$(BIN)/whereabouts-py-dev devcluster build

node-binaries: $(STAMP)
	$(BIN)/python -m whereabouts_py_dev.cluster

# localhost/whereabouts-py:dev as an OCI archive in ~/.cache/whereabouts-py/images,
# rebuilt only when the Dockerfile, pyproject.toml, README.md or the sources change.
image: system-deps $(STAMP)
	$(BIN)/python -m whereabouts_py_dev.image

setup: system-deps $(STAMP) controlplane node-binaries image

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
