# One image for the worker, beat and the CLI.
#   docker build -t retention-worker .
#   docker run --rm -v $PWD/retention.toml:/etc/retention.toml -e RETENTION_CONFIG=/etc/retention.toml \
#     retention-worker retention sweep --dry-run
#   ... retention-worker celery -A worker.celery_app worker
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY worker ./worker
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements.lock \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps . \
 && /opt/venv/bin/python -m compileall -q /opt/venv

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /home/retention retention
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER retention
WORKDIR /home/retention
CMD ["retention", "--help"]
