# One image for the Celery worker, Celery beat and the `retention` CLI.
#
#   docker build -t retention-worker .
#   docker run --rm -v "$PWD/retention.toml:/etc/retention/retention.toml:ro" \
#     retention-worker retention sweep --dry-run
#   ... retention-worker celery -A worker.celery_app worker --loglevel INFO
#   ... retention-worker celery -A worker.celery_app beat --loglevel INFO \
#         --schedule /var/lib/retention/celerybeat-schedule
#
# deploy/compose.yaml and deploy/k8s/ run it; scripts/validate-deploy lints this file with
# hadolint (no rule is ignored), and scripts/test-image builds it without a Docker daemon
# (buildah, on a local Debian base) and runs the CLI, a config check and a sweep inside it.

# A release pipeline should pin the base by digest (python:3.11-slim-bookworm@sha256:...) and
# pass it with --build-arg; the tag is the default because CI here cannot reach a registry.
# bookworm, not plain "slim", so a rebuild does not silently move to another Debian release.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment with the locked dependencies and the project ----------
# Three layers, from the least to the most often changed, so that a code change rebuilds only
# the last one and the image's dependency layer stays as it was (scripts/test-image builds the
# image on every test run).
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# The dependencies. --require-hashes: every package, transitive ones included, must match the
# lock's hashes. requirements.lock holds the runtime dependencies only, with the otel extra
# (traces, off until the OTEL_* variables ask for them): the demo's local S3 server (moto, in
# requirements-demo.lock) and the test tools never reach the image. Bytecode
# is compiled once, here: the root filesystem is read-only at run time (Kubernetes), and
# unchecked-hash .pyc files are used as they are, whatever the copied files' mtimes.
COPY requirements.lock ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock \
 && /opt/venv/bin/python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /opt/venv/lib

# The build backend, hash-pinned, in a throwaway venv: a plain `pip install .` would fetch an
# unpinned one.
COPY deploy/build-requirements.txt /tmp/build-requirements.txt
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir --require-hashes -r /tmp/build-requirements.txt

# The project, as a wheel installed --no-deps (its dependencies are exactly the locked ones
# above). It goes under /opt/project with /opt/venv's own layout (pip --root), not into
# /opt/venv: the runtime stage copies the two apart, so a code change leaves the dependencies'
# layer untouched. The bytecode names /opt/venv, where the files end up (-s strips, -p prepends).
COPY pyproject.toml README.md ./
COPY worker ./worker
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps --no-warn-script-location --root /opt/project \
      /tmp/wheels/retention_worker-*.whl \
 && /opt/venv/bin/python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash \
      -s /opt/project -p / /opt/project/opt/venv/lib

# ---- simulators: the provider simulators, for the compose try-out only -------------------
# Test and demo equipment: pyproject.toml leaves them out of the wheel, so the runtime image
# below never holds them. deploy/compose.yaml's `simulators` profile builds this target: the
# source tree copied above, run on the same locked dependencies.
FROM build AS simulators
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/src \
    PYTHONUNBUFFERED=1
USER 10001:10001
CMD ["python", "-m", "worker.simulators", "--help"]

# ---- runtime (the default target) -------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="retention-worker" \
      org.opencontainers.image.description="Archives processing-API job outputs into your own S3 bucket, verifies them, then deletes the jobs at the vendor." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A fixed, numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER, and
# volumes and securityContexts (deploy/k8s) name the same ids.
# /var/lib/retention: working directory and beat's schedule file.
# /run/retention/metrics: PROMETHEUS_MULTIPROC_DIR (deployments mount an empty tmpfs here).
RUN groupadd --system --gid 10001 retention \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/retention --no-create-home \
      --shell /usr/sbin/nologin retention \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/retention /run/retention /run/retention/metrics \
 && install -d -m 0755 /etc/retention

# The dependencies, then the project on top: two layers, the first unchanged by a code change.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/project/opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RETENTION_CONFIG=/etc/retention/retention.toml \
    PROMETHEUS_MULTIPROC_DIR=/run/retention/metrics

USER 10001:10001
WORKDIR /var/lib/retention

# The worker serves Prometheus metrics here ([metrics] port).
EXPOSE 9808

# Config, bucket, ledger and broker, without calling the providers (their APIs are rate
# limited and metered). It makes network calls, hence the modest interval.
HEALTHCHECK --interval=60s --timeout=30s --start-period=30s --retries=3 \
  CMD ["retention", "check", "--skip-providers"]

CMD ["retention", "--help"]
