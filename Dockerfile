# The one kfloop image (cluster.image): the pipeline's steps (kfp's executor runs each component in it), the
# InferenceService's transformer and predictor (`python3 -m kfloop.serving …`) and the scheduled jobs
# (`kfloop monitor check`, `kfloop features materialize`).
#
#   docker build -t ghcr.io/kfloop/kfloop:0.1.0 .
#
# Pin the base by digest when you build (`docker buildx imagetools inspect python:3.11.14-slim-bookworm`
# prints it) and pass it as PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:…; the default is an exact
# patch release, never a moving tag. tests/test_image.py installs the wheel the way the build stage does and
# runs every entrypoint the image calls (no Docker engine runs in CI).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: a venv with kfloop and its stack, from the wheel of this tree ------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/kfloop
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kfloop ./kfloop
COPY components ./components
COPY pipelines ./pipelines
COPY feature_repo ./feature_repo
COPY serving ./serving
COPY monitoring ./monitoring
COPY helm ./helm
RUN /opt/kfloop/bin/pip install --upgrade pip build \
 && /opt/kfloop/bin/python -m build --wheel --outdir /wheels . \
 # torch's CPU wheel: an unpinned torch pulls a CUDA build of several GB
 && /opt/kfloop/bin/pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
 && /opt/kfloop/bin/pip install "$(ls /wheels/kfloop-*.whl)[tensorflow,kafka]" \
 && /opt/kfloop/bin/pip uninstall --yes build
# What the cluster path needs and the local one does not: DuckDB's httpfs extension, so Feast's DuckDB offline
# store reads the lake's Parquet on S3 (a pod must not download it at run time). DuckDB loads extensions from
# ~/.duckdb/extensions: it is installed under the runtime user's home, which the image ships read-only.
RUN mkdir -p /home/kfloop \
 && HOME=/home/kfloop /opt/kfloop/bin/python -c "import duckdb; duckdb.connect().install_extension('httpfs')"

# --- runtime: the venv only, as a non-root user --------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.source="https://github.com/kfloop/kfloop" \
      org.opencontainers.image.description="kfloop: pipeline steps, KServe transformer and predictor, scheduled jobs"
RUN groupadd --gid 10001 kfloop && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /home/kfloop kfloop
COPY --from=build /opt/kfloop /opt/kfloop
COPY --from=build --chown=10001:10001 /home/kfloop /home/kfloop
# python3 is the venv's (kfp's executor and the InferenceService call `python3`). Everything written goes under
# /tmp (an emptyDir in every pod), so the root filesystem can be read-only.
ENV PATH=/opt/kfloop/bin:$PATH \
    HOME=/home/kfloop \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/.matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
CMD ["kfloop", "--help"]
