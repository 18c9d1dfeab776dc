# Two images from one file:
#   docker build --target api    -t modelpress-api .     (torch-free: FastAPI, SQLAlchemy, Celery client)
#   docker build --target worker -t modelpress-worker .  (adds torch CPU, onnx, onnxruntime)
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 modelpress
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
ENV MODELPRESS_STORAGE_URL=/data/storage

FROM base AS api
RUN pip install '.[server]'
USER modelpress
EXPOSE 8000
CMD ["modelpress", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
# The CPU build of torch first, from PyTorch's CPU index: a plain range would pull CUDA wheels.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install '.[worker]'
# No `USER`: the worker starts as root (in its container) only to build each sandbox child's
# jail (worker/sandbox/jail.py: namespaces, pivot_root), and every child then drops to its own
# unprivileged uid before it reads a byte of the model. The container needs CAP_SYS_ADMIN and no
# seccomp/AppArmor filter on mount/unshare (docker-compose.yml); MODELPRESS_SANDBOX_ISOLATION=
# required there refuses jobs rather than run them unjailed if that is missing.
CMD ["modelpress", "worker", "--concurrency", "2"]

FROM base AS worker-cuda
# PyPI's default torch wheels are CUDA builds; onnxruntime-gpu replaces the CPU onnxruntime.
RUN pip install torch==2.13.0 && pip install '.[worker]' \
    && pip uninstall -y onnxruntime && pip install onnxruntime-gpu
# Root for the jail, as in the `worker` stage.
CMD ["modelpress", "worker", "--device", "cuda", "--concurrency", "1"]
