"""How a question becomes a prompt and how an answer ends, for any tokenizer.

Training and evaluation share this one place so a tuned model sees exactly the prompt it was
trained on. With a chat template the prompt is the rendered user turn plus the generation prompt,
and the answer ends with the template's end-of-turn text (``<|im_end|>`` for SmolLM2), so the
tuned model learns to stop. Without one: ``<human>: {q}\\n<assistant>: `` and the EOS token.
"""

from __future__ import annotations

from dataclasses import dataclass

PLAIN_TEMPLATE = "<human>: {question}\n<assistant>: "
_PROBE = "ANSWER_PROBE_7f3a"


@dataclass(frozen=True)
class PromptFormat:
    """Prompt and answer framing derived once from a tokenizer."""

    uses_chat_template: bool
    end_of_turn: str
    _tokenizer: object

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "PromptFormat":
        if getattr(tokenizer, "chat_template", None):
            full = tokenizer.apply_chat_template(
                [{"role": "user", "content": "q"}, {"role": "assistant", "content": _PROBE}], tokenize=False
            )
            tail = full.split(_PROBE, 1)[1]
            # The end-of-turn marker is what the template writes right after the answer, minus
            # the newline between turns (generation stops on the marker, before the newline).
            end_of_turn = tail.rstrip("\n") or (tokenizer.eos_token or "")
            return cls(True, end_of_turn, tokenizer)
        return cls(False, tokenizer.eos_token or "", tokenizer)

    def prompt(self, question: str) -> str:
        """The text the model is given; generation continues from its end."""
        if self.uses_chat_template:
            return self._tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            )
        return PLAIN_TEMPLATE.format(question=question)

    def completion(self, answer: str) -> str:
        """The training target: the answer, then the marker that makes the model stop."""
        return answer + self.end_of_turn

    def stop_token_ids(self) -> list[int]:
        """Token ids at which greedy generation stops (end-of-turn and EOS)."""
        ids = set()
        tokenizer = self._tokenizer
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        if self.end_of_turn:
            encoded = tokenizer.encode(self.end_of_turn, add_special_tokens=False)
            if len(encoded) == 1:
                ids.add(int(encoded[0]))
        return sorted(ids)
