# syntax=docker/dockerfile:1
# buildkite-controller image.
#
# Two stages: the builder turns the source tree into wheels (ours plus every dependency), the final
# stage installs them offline from a bind mount, so neither the wheels, the source, a compiler nor a
# pip cache ends up in a layer. The result runs as a fixed non-root UID with a read-only root
# filesystem; the only writable path it expects is /tmp (an emptyDir in deploy/base/deployment.yaml).
#
#   docker build -t buildkite-controller .
#   docker run --rm -p 8080:8080 --read-only --tmpfs /tmp buildkite-controller --help

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Only what the wheel is built from (see .dockerignore): tests and deploy files stay out of the context.
COPY pyproject.toml README.md ./
COPY podspec ./podspec
COPY app ./app
# Every dependency ships a wheel for the slim image's platform, so no compiler is needed here either.
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="buildkite-controller" \
      org.opencontainers.image.description="Runs Buildkite CI jobs as Kubernetes pods" \
      org.opencontainers.image.licenses="MIT"
# The wheels are bind-mounted for this one RUN, so they never become part of the image. pip compiles
# bytecode while installing: the read-only root filesystem means Python cannot write it later. pip,
# setuptools and wheel are removed afterwards: nothing installs or builds anything at run time.
# Versions are fixed by the wheels built above; --no-index reaches nothing else.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels --disable-pip-version-check \
        --root-user-action=ignore buildkite-controller \
    && python -m pip uninstall --yes --root-user-action=ignore pip setuptools wheel \
    && groupadd --system --gid 10001 controller \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin controller
# Nothing may write outside /tmp: no .pyc files, no home directory, temp files in the emptyDir.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /tmp
# Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
# 8080: the webhook; 9090: the ops endpoints (deploy/ passes --ops-port 9090).
EXPOSE 8080 9090
# Exec form: the controller is PID 1 and receives SIGTERM itself, so it can drain and release its lease.
ENTRYPOINT ["buildkite-controller"]
CMD ["serve"]
