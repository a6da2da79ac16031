"""Generation engines: turn bare questions into raw model answers, greedily.

The evaluator reaches a model only through ``GenerationEngine.generate`` so the same scoring
runs on an in-process HF model (``HFGenerationEngine``) or on an OpenAI-compatible server such
as vLLM (``OpenAICompletionsEngine``). Engines take *bare* questions and apply the model's
``PromptFormat`` themselves, so a tuned model sees exactly the prompt it was trained on.

Each question comes with its own ``max_new_tokens``; an engine never returns more tokens than
that for the item, whatever else shares its batch, so results do not depend on batch size.
"""

from __future__ import annotations

import abc
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from spelltransfer.errors import ConfigError, ModelNotFoundError, SpellTransferError

ProgressCallback = Callable[[int], None]
"""Called with the number of items just finished (for progress bars)."""


class GenerationEngine(abc.ABC):
    """Greedy answers for bare questions; one concrete class per backend."""

    #: What produced the answers (model name, plus adapter when there is one); goes into results.
    model_name: str = ""
    adapter: str | None = None

    @abc.abstractmethod
    def generate(
        self,
        questions: Sequence[str],
        max_new_tokens: Sequence[int] | int,
        on_progress: ProgressCallback | None = None,
    ) -> list[str]:
        """Raw answer text for each question, in input order, without the end-of-turn marker."""

    def close(self) -> None:
        """Free what the engine holds (model weights, connections)."""


def _caps(questions: Sequence[str], max_new_tokens: Sequence[int] | int) -> list[int]:
    if isinstance(max_new_tokens, int):
        caps = [max_new_tokens] * len(questions)
    else:
        caps = [int(cap) for cap in max_new_tokens]
    if len(caps) != len(questions):
        raise ConfigError(f"max_new_tokens has {len(caps)} entries for {len(questions)} questions")
    for cap in caps:
        if cap < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {cap}")
    return caps


class HFGenerationEngine(GenerationEngine):
    """Batched greedy generation with a transformers model in this process.

    Prompts are sorted by (token budget, length) before batching so a batch holds prompts of
    nearly equal length: with left padding, padding is wasted compute on every decoding step.
    A PEFT adapter is loaded with ``PeftModel.from_pretrained`` and merged into the weights,
    which makes generation as fast as the base model's.
    """

    def __init__(
        self,
        model_name: str = "smollm2-135m",
        adapter_dir: str | os.PathLike | None = None,
        batch_size: int = 32,
        dtype: str = "auto",
        device: str | None = None,
        merge_adapter: bool = True,
        share_prefix: bool = True,
        num_threads: int | None = None,
        *,
        model=None,
        tokenizer=None,
    ) -> None:
        from spelltransfer.models import PromptFormat, load_model, load_tokenizer

        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if num_threads is not None:
            if num_threads < 1:
                raise ConfigError(f"num_threads must be >= 1, got {num_threads}")
            import torch

            torch.set_num_threads(num_threads)
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self.model_name = str(model_name)
        self.adapter = str(adapter_dir) if adapter_dir is not None else None
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(self.model_name)
        # Batched generation needs the prompt flush right; a training tokenizer may pad right.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if model is None:
            model = load_model(self.model_name, dtype=dtype, device=device)
            if adapter_dir is not None:
                model = _load_adapter(model, Path(adapter_dir), merge_adapter)
        elif adapter_dir is not None:
            raise ConfigError("pass either a loaded model or adapter_dir, not both")
        self.model = model
        self.format = PromptFormat.from_tokenizer(self.tokenizer)
        self.stop_ids = self.format.stop_token_ids()

    @classmethod
    def from_model(cls, model, tokenizer, batch_size: int = 32, model_name: str = "in-memory") -> "HFGenerationEngine":
        """Wrap an already loaded model (e.g. the one being trained, for validation accuracy).

        The model's train/eval mode is restored after each ``generate`` call.
        """
        return cls(model_name=model_name, batch_size=batch_size, model=model, tokenizer=tokenizer)

    def generate(self, questions, max_new_tokens, on_progress=None) -> list[str]:
        import torch

        caps = _caps(questions, max_new_tokens)
        token_ids = self.tokenizer([self.format.prompt(q) for q in questions], add_special_tokens=False)["input_ids"]
        order = sorted(range(len(token_ids)), key=lambda i: (caps[i], len(token_ids[i])))
        answers: list[str] = [""] * len(token_ids)
        was_training = self.model.training
        device = next(self.model.parameters()).device
        self.model.eval()
        try:
            with torch.inference_mode():
                prefix = _common_prefix(token_ids) if self.share_prefix else []
                prefix_cache = self._prefill(prefix, device) if prefix else None
                for start in range(0, len(order), self.batch_size):
                    batch = order[start : start + self.batch_size]
                    new_tokens = self._generate_batch([token_ids[i] for i in batch], max(caps[i] for i in batch),
                                                      prefix, prefix_cache, device)
                    for row, i in enumerate(batch):
                        answers[i] = self._decode(new_tokens[row][: caps[i]])
                    if on_progress is not None:
                        on_progress(len(batch))
        finally:
            self.model.train(was_training)
        return answers

    def _prefill(self, prefix: list[int], device):
        import torch

        return self.model(torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1).past_key_values

    def _generate_batch(self, rows: list[list[int]], cap: int, prefix: list[int], prefix_cache, device) -> list[list[int]]:
        """Greedy tokens for one batch. With a shared prefix (the chat template's system turn,
        ~half of each prompt) its KV cache is computed once and the padding goes between prefix
        and question: positions come from the attention mask, so the maths is unchanged."""
        import copy

        import torch

        pad = self.tokenizer.pad_token_id
        suffixes = [row[len(prefix) :] for row in rows]
        width = max(len(suffix) for suffix in suffixes)
        input_ids = [prefix + [pad] * (width - len(s)) + s for s in suffixes]
        mask = [[1] * len(prefix) + [0] * (width - len(s)) + [1] * len(s) for s in suffixes]
        kwargs = {}
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(rows))
            kwargs["past_key_values"] = cache
        input_tensor = torch.tensor(input_ids, device=device)
        output = self.model.generate(
            input_ids=input_tensor,
            attention_mask=torch.tensor(mask, device=device),
            max_new_tokens=cap,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=self.stop_ids,
            pad_token_id=pad,
            use_cache=True,
            **kwargs,
        )
        return output[:, input_tensor.shape[1] :].tolist()

    def _decode(self, token_ids: list[int]) -> str:
        # Cut at the first stop token: after it the row holds padding (or, when the cap was
        # reached by a neighbour, nothing of ours).
        for position, token in enumerate(token_ids):
            if token in self.stop_ids:
                token_ids = token_ids[:position]
                break
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if self.format.end_of_turn and self.format.end_of_turn in text:
            text = text.split(self.format.end_of_turn, 1)[0]
        return text.strip()

    def close(self) -> None:
        self.model = None


def _common_prefix(rows: list[list[int]]) -> list[int]:
    """Longest token prefix shared by all rows, leaving each row at least one token of its own."""
    if not rows:
        return []
    limit = min(len(row) for row in rows) - 1
    first = rows[0]
    length = 0
    while length < limit and all(row[length] == first[length] for row in rows):
        length += 1
    return first[:length]


def _load_adapter(model, adapter_dir: Path, merge: bool):
    """Apply a PEFT adapter folder; merged, generation costs the same as the base model."""
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelNotFoundError(f"adapter folder {adapter_dir} has no adapter_config.json (a PEFT adapter is expected)")
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise ModelNotFoundError(f"cannot load adapter {adapter_dir}: {error}") from error
    return (model.merge_and_unload() if merge else model).eval()


class OpenAICompletionsEngine(GenerationEngine):
    """Greedy answers from an OpenAI-compatible ``/v1/completions`` endpoint (e.g. vLLM).

    The prompt is formatted here with the model's own ``PromptFormat`` (from the tokenizer of
    ``prompt_model``) so served and in-process evaluations see the same text; ``model`` is the
    served name (a LoRA adapter's name on a vLLM server started with ``--enable-lora``). The API
    key, if any, is read from the environment variable ``api_key_env`` and never logged.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        prompt_model: str = "smollm2-135m",
        batch_size: int = 32,
        timeout_s: float = 120.0,
    ) -> None:
        from spelltransfer.models import PromptFormat, load_tokenizer

        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {base_url!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.url = base_url.rstrip("/") + ("/completions" if base_url.rstrip("/").endswith("/v1") else "/v1/completions")
        self.model_name = model
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self._api_key = os.environ.get(api_key_env) if api_key_env else None
        self.format = PromptFormat.from_tokenizer(load_tokenizer(prompt_model))

    def generate(self, questions, max_new_tokens, on_progress=None) -> list[str]:
        caps = _caps(questions, max_new_tokens)
        answers: list[str] = []
        # The completions API takes one max_tokens per request, so group by budget.
        for start in range(0, len(questions), self.batch_size):
            chunk = list(range(start, min(start + self.batch_size, len(questions))))
            by_cap: dict[int, list[int]] = {}
            for i in chunk:
                by_cap.setdefault(caps[i], []).append(i)
            chunk_answers: dict[int, str] = {}
            for cap, indices in by_cap.items():
                texts = self._complete([self.format.prompt(questions[i]) for i in indices], cap)
                chunk_answers.update(zip(indices, texts))
            answers.extend(chunk_answers[i] for i in chunk)
            if on_progress is not None:
                on_progress(len(chunk))
        return answers

    def _complete(self, prompts: list[str], max_tokens: int) -> list[str]:
        body = {
            "model": self.model_name,
            "prompt": prompts,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stop": [self.format.end_of_turn] if self.format.end_of_turn else None,
        }
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = json.load(response)
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            raise SpellTransferError(f"{self.url} answered HTTP {error.code}: {detail}") from error
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise SpellTransferError(f"cannot reach {self.url}: {error}") from error
        choices = sorted(payload.get("choices", []), key=lambda choice: choice.get("index", 0))
        if len(choices) != len(prompts):
            raise SpellTransferError(f"{self.url} returned {len(choices)} choices for {len(prompts)} prompts")
        return [choice.get("text", "").split(self.format.end_of_turn, 1)[0].strip() if self.format.end_of_turn
                else choice.get("text", "").strip() for choice in choices]
