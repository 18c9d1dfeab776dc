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
USER modelpress
CMD ["modelpress", "worker", "--concurrency", "2"]

FROM base AS worker-cuda
# PyPI's default torch wheels are CUDA builds; onnxruntime-gpu replaces the CPU onnxruntime.
RUN pip install torch==2.13.0 && pip install '.[worker]' \
    && pip uninstall -y onnxruntime && pip install onnxruntime-gpu
USER modelpress
CMD ["modelpress", "worker", "--device", "cuda", "--concurrency", "1"]
