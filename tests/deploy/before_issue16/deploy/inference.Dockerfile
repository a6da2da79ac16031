# vLLM OpenAI-compatible server with the champion LoRA adapter.
# The `champion-pull` service fills /adapters/champion (`spelltransfer registry pull
# spelling-lora@champion`) and /models (the base model converted from the bundled GGUF).
FROM vllm/vllm-openai:v0.11.0
EXPOSE 8000
ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server"]
CMD ["--model", "/models/models/smollm2-135m-instruct", "--served-model-name", "smollm2-135m", \
     "--enable-lora", "--lora-modules", "champion=/adapters/champion", "--max-lora-rank", "32", \
     "--host", "0.0.0.0", "--port", "8000"]
