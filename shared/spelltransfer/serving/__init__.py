"""Deployment: export adapters/merged models, serve them with vLLM, load-test and report.

- ``export``       PEFT adapter + merged HF model (+ GGUF) with model cards
- ``vllm_server``  start/stop a real vLLM OpenAI-compatible server with LoRA adapters
- ``loadtest``     bounded headless Locust runs (``services/loadtest/locustfile.py``) + figures
- ``monitor``      vLLM ``/metrics`` and host CPU/memory/GPU sampled during a load test
- ``api_eval``     same model, same questions: in-process vs through the API
- ``report``       the HTML deployment report

vLLM and Locust live in the serve env (``make serve-env`` -> ``.venv-serve``); nothing here
imports them.
"""
