"""Locust user that streams the study's prompts through vLLM's ``/v1/completions``.

Run by ``spelltransfer serve loadtest`` (``spelltransfer.serving.loadtest``) inside the serve env;
settings come from the environment so this file needs nothing from the training stack:

- ``LOADTEST_PROMPTS``: JSONL, one ``{"prompt": <chat-formatted text>, "task": ...}`` a line
- ``LOADTEST_MODEL``: served model or adapter name; ``LOADTEST_MAX_TOKENS``: completion length
- ``LOADTEST_RECORDS``: JSONL written here, one line per request (latency, TTFT, inter-token gaps,
  output tokens) so percentiles are computed exactly rather than from Locust's buckets.

Locust itself also sees two request types: ``completion`` (whole request) and ``ttft``.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time

from locust import HttpUser, between, events, task

_PROMPTS: list[dict] = []
_RECORDS = None


@events.test_start.add_listener
def _load(environment, **_):
    global _RECORDS
    path = os.environ["LOADTEST_PROMPTS"]
    with open(path) as handle:
        _PROMPTS[:] = [json.loads(line) for line in handle if line.strip()]
    if not _PROMPTS:
        raise RuntimeError(f"LOADTEST_PROMPTS={path} holds no prompts")
    _RECORDS = open(os.environ["LOADTEST_RECORDS"], "a", buffering=1)


@events.test_stop.add_listener
def _close(environment, **_):
    if _RECORDS is not None:
        _RECORDS.flush()


class CompletionUser(HttpUser):
    """One client: picks the next prompt, streams a greedy completion, times every chunk."""

    wait_time = between(0.0, 0.05)

    def on_start(self):
        self.model = os.environ["LOADTEST_MODEL"]
        self.max_tokens = int(os.environ.get("LOADTEST_MAX_TOKENS", "16"))
        # Each user starts at its own offset so concurrent users send different prompts.
        self.prompts = itertools.cycle(random.Random(id(self)).sample(_PROMPTS, len(_PROMPTS)))

    @task
    def complete(self):
        example = next(self.prompts)
        body = {"model": self.model, "prompt": example["prompt"], "max_tokens": self.max_tokens,
                "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True}}
        record = {"t_start": time.time(), "task": example.get("task"), "ok": False, "status": None,
                  "error": None, "ttft_s": None, "latency_s": None, "itl_s": [], "output_tokens": 0}
        started = time.perf_counter()
        last = None
        done = False
        with self.client.post("/v1/completions", json=body, stream=True, name="completion",
                              catch_response=True, timeout=120) as response:
            record["status"] = response.status_code
            try:
                if response.status_code != 200:
                    raise ValueError(f"HTTP {response.status_code}: {response.text[:200]}")
                for line in response.iter_lines():
                    if not line or not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        break
                    chunk = json.loads(payload)
                    if chunk.get("usage"):
                        record["output_tokens"] = int(chunk["usage"].get("completion_tokens") or 0)
                    if chunk.get("choices") and chunk["choices"][0].get("text"):
                        now = time.perf_counter()
                        if last is None:
                            record["ttft_s"] = now - started
                        else:
                            record["itl_s"].append(now - last)
                        last = now
                if not done:
                    raise ValueError("stream ended without [DONE]")
                if record["ttft_s"] is None:
                    raise ValueError("no tokens streamed")
                record["ok"] = True
                response.success()
            except Exception as error:  # noqa: BLE001 - every failure is recorded, none stops the run
                record["error"] = str(error)[:300]
                response.failure(record["error"])
        record["latency_s"] = time.perf_counter() - started
        if record["ttft_s"] is not None:
            events.request.fire(request_type="STREAM", name="ttft", response_time=record["ttft_s"] * 1000,
                                response_length=0, exception=None, context={})
        if _RECORDS is not None:
            _RECORDS.write(json.dumps(record) + "\n")
