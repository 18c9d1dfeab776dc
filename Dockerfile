# Two images from one file:
#   docker build --target api    -t modelpress-api .     (torch-free: FastAPI, SQLAlchemy, Celery client)
#   docker build --target worker -t modelpress-worker .  (adds torch CPU, onnx, onnxruntime)
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 modelpress
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY requirements ./requirements
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
# /data: the SQLite file and blobs of a single-host run, and always the local scratch. With
# MODELPRESS_STORAGE_URL=s3://... (docker-compose.yml) it holds scratch only.
RUN mkdir -p /data && chown modelpress:modelpress /data
ENV MODELPRESS_DATA_DIR=/data MODELPRESS_STORAGE_URL=/data/storage

FROM base AS api
# Exactly the locked files with their hashes (requirements/server.txt, `make lock`), then the
# project itself without resolving anything more.
RUN pip install --require-hashes -r requirements/server.txt \
    && pip install --no-deps --no-build-isolation .
USER modelpress
EXPOSE 8000
CMD ["modelpress", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
# The worker lock pins torch==2.13.0+cpu by the hash of the CPU wheel, which PyTorch's CPU index
# serves (PyPI's torch wheels are CUDA builds); everything else comes from PyPI, hash-checked.
RUN pip install --require-hashes -r requirements/worker.txt \
        --extra-index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-deps --no-build-isolation .
# No `USER`: the worker starts as root (in its container) only to build each sandbox child's
# jail (worker/sandbox/jail.py: namespaces, pivot_root), and every child then drops to its own
# unprivileged uid before it reads a byte of the model. The container needs CAP_SYS_ADMIN and no
# seccomp/AppArmor filter on mount/unshare (docker-compose.yml); MODELPRESS_SANDBOX_ISOLATION=
# required there refuses jobs rather than run them unjailed if that is missing.
CMD ["modelpress", "worker", "--concurrency", "2"]

FROM base AS worker-cuda
# PyPI's default torch wheels are CUDA builds; onnxruntime-gpu replaces the CPU onnxruntime.
# Not hash-locked: the locks in requirements/ hold the CPU build of torch.
RUN pip install torch==2.13.0 && pip install '.[worker]' \
    && pip uninstall -y onnxruntime && pip install onnxruntime-gpu
# Root for the jail, as in the `worker` stage.
CMD ["modelpress", "worker", "--device", "cuda", "--concurrency", "1"]
