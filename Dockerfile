# whereabouts-py: one image for the node daemon (with install-cni as its init
# step) and the reconciler. Build: docker build -t whereabouts-py .
# BASE_IMAGE may name any Debian bookworm image with python (>= 3.11, venv and
# pip) at the same path in both stages; `make image` builds one from Debian
# packages when no registry is reachable (docs/image.md).
ARG PYTHON_VERSION=3.12.8
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim-bookworm

FROM ${BASE_IMAGE} AS build
# PyInstaller (below) needs binutils (objdump, objcopy; strip makes the bundle smaller).
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils=2.40-2 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Two virtualenvs: /opt/whereabouts-py, which the runtime stage copies as is, and
# /opt/shim-build with PyInstaller, which stays here. Their dependencies come
# first, installed through a stand-in package, so that a change to the sources
# alone reuses these layers.
COPY pyproject.toml README.md ./
RUN mkdir whereabouts_py && touch whereabouts_py/__init__.py \
    && python -m venv /opt/whereabouts-py \
    && /opt/whereabouts-py/bin/pip install --no-cache-dir --no-compile . \
    && /opt/whereabouts-py/bin/pip uninstall -y whereabouts-py \
    && python -m venv /opt/shim-build \
    && /opt/shim-build/bin/pip install --no-cache-dir ".[shim-build]" \
    && /opt/shim-build/bin/pip uninstall -y whereabouts-py \
    && rm -rf whereabouts_py build ./*.egg-info
COPY whereabouts_py ./whereabouts_py
# The CNI shim runs on the node, which may have no Python: build it self-contained
# (its own libpython and stdlib modules) with PyInstaller.
RUN /opt/whereabouts-py/bin/pip install --no-cache-dir --no-compile --no-deps . \
    && /opt/shim-build/bin/pip install --no-cache-dir --no-deps . \
    && /opt/shim-build/bin/whereabouts-py build-shim --out /opt/whereabouts-py-shim

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="whereabouts-py" \
      org.opencontainers.image.description="Cluster-wide IPAM for Kubernetes secondary networks, compatible with whereabouts" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/whereabouts-py/whereabouts-py"
COPY --from=build /opt/whereabouts-py /opt/whereabouts-py
# install-cni copies this bundle into the node's CNI bin dir.
COPY --from=build /opt/whereabouts-py-shim /opt/whereabouts-py/shim
ENV PATH="/opt/whereabouts-py/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The reconciler runs as this user. The DaemonSet runs the daemon and
# install-cni as root (it writes /opt/cni/bin and enters network namespaces).
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin whereabouts
USER 10001
ENTRYPOINT ["whereabouts-py"]
CMD ["--help"]
