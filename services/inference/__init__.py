"""Inference service: the vLLM OpenAI-compatible server with the study's LoRA adapters."""
