# Sweep controller (gRPC, Optuna with SQLite or PostgreSQL storage). CPU only.
# Build context: the repository root (docker-compose.gpu.yml sets it).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 WANDB_MODE=offline
WORKDIR /app
# CPU torch first, pinned exactly: a loose pin pulls a multi-GB CUDA build (see Makefile).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY protos ./protos
COPY configs ./configs
RUN pip install -e ".[track,platform]"
EXPOSE 50051
ENTRYPOINT ["spelltransfer", "platform", "controller"]
CMD ["--host", "0.0.0.0", "--port", "50051", "--state-dir", "/data/controller"]
