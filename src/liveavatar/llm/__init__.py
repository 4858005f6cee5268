"""Language models for dialogue mode: backends, resilience wrappers, prompt building."""

from liveavatar.llm.base import LLM, ChatMessage, LLMError, estimate_tokens
from liveavatar.llm.local import (
    PACKAGED_MODELS,
    LocalLLM,
    LocalModel,
    load_local_model,
    packaged_model_path,
    packaged_smollm2_path,
)
from liveavatar.llm.openai import OpenAILLM
from liveavatar.llm.prompt import build_messages
from liveavatar.llm.registry import LLM_FACTORIES, LLMSettings, build_llm
from liveavatar.llm.resilience import WithRetries, WithTimeout

__all__ = [
    "LLM",
    "LLM_FACTORIES",
    "ChatMessage",
    "LLMError",
    "LLMSettings",
    "PACKAGED_MODELS",
    "LocalLLM",
    "LocalModel",
    "OpenAILLM",
    "WithRetries",
    "WithTimeout",
    "build_llm",
    "build_messages",
    "estimate_tokens",
    "load_local_model",
    "packaged_model_path",
    "packaged_smollm2_path",
]
