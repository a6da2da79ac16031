"""Base models: resolve a name to weights on disk, load them, and format prompts."""

from spelltransfer.models.base_model import DEFAULT_MODEL, load_model, load_tokenizer, resolve_model_path
from spelltransfer.models.prompting import PromptFormat

__all__ = ["DEFAULT_MODEL", "load_model", "load_tokenizer", "resolve_model_path", "PromptFormat"]
