"""What each LangChain integration does with a seed: the one table `lock_model` reads.

For every chat model integration the package knows: the model field that
carries the seed, where the seed lands in the request body, the response
field that names the backend build (``system_fingerprint``) if any, the seed
values the backend reads as "pick a random seed" (a lock on such a value
locks nothing), and why a model cannot take a seed at all. docs/providers.md
shows this table; tests/unit_tests/test_providers.py checks that the page and
the table agree and sends each integration's request to a local stub
speaking its wire format.

A model whose class is not listed here is locked by its field names alone
(`_chat_models._field_for`), without the checks below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlparse

from langchain_seedlock._errors import UnsupportedModelError, UnusableSeedError

# llama.cpp reads the seed as an unsigned 32-bit integer and draws a random one
# for LLAMA_DEFAULT_SEED (0xFFFFFFFF): -1, 0xFFFFFFFF and every other value with
# those low 32 bits all mean "random". vLLM reads -1 as "no seed".
_LLAMA_CPP_RANDOM: Final = (-1, 0xFFFFFFFF)
_UINT32: Final = 2**32
_INT32: Final = (-(2**31), 2**31 - 1)


@dataclass(frozen=True, slots=True)
class Provider:
    """One integration's seed facts (see the module docstring)."""

    name: str
    """The provider as the docs name it."""
    integration: str
    """``"<import package>.<class>"`` of the LangChain chat model."""
    package: str
    """The pip package of the integration."""
    wire: Mapping[str, str] = field(default_factory=dict)
    """Lock parameter -> its dotted path in the request body (``options.seed``)."""
    seed_field: str | None = None
    """The model field set to the seed (``model_kwargs["seed"]``: inside that mapping)."""
    fingerprint: str | None = None
    """The response field naming the backend build, if the API sends one."""
    random_seeds: tuple[int, ...] = ()
    """Seeds the backend reads as "draw a random seed"."""
    seed_modulus: int | None = None
    """The backend keeps the seed modulo this (32-bit seeds): random values repeat."""
    seed_range: tuple[int, int] | None = None
    """The seeds the API accepts, when narrower than the lock's 64 bits."""
    via_model_kwargs: tuple[str, ...] = ()
    """Lock parameters the integration has no field for: set in its ``model_kwargs``."""
    unsupported: str | None = None
    """Why this model cannot be locked (the API takes no seed)."""
    tested: str = ""
    """How the row is tested (docs/providers.md)."""

    def is_random(self, seed: int) -> bool:
        """Whether the backend reads ``seed`` as "pick a random seed"."""
        if self.seed_modulus is None:
            return seed in self.random_seeds
        return seed % self.seed_modulus in {s % self.seed_modulus for s in self.random_seeds}


_OPENAI_WIRE: Final = MappingProxyType(
    {"seed": "seed", "temperature": "temperature", "top_p": "top_p", "max_tokens": "max_tokens"}
)
_STUB = "lock_model against a local stub of its API (request body inspected)"

OPENAI: Final = Provider(
    name="OpenAI",
    integration="langchain_openai.ChatOpenAI",
    package="langchain-openai",
    seed_field="seed",
    wire=MappingProxyType({**_OPENAI_WIRE, "max_tokens": "max_completion_tokens"}),
    fingerprint="system_fingerprint",
    tested=(
        "the same client and request body as the OpenAI-compatible row; "
        "api.openai.com itself is not reachable from the tests"
    ),
)
OPENAI_COMPATIBLE: Final = Provider(
    name="OpenAI-compatible server (llama.cpp, vLLM)",
    integration="langchain_openai.ChatOpenAI",
    package="langchain-openai",
    seed_field="seed",
    wire=OPENAI.wire,
    fingerprint="system_fingerprint",
    random_seeds=_LLAMA_CPP_RANDOM,
    seed_modulus=_UINT32,
    tested=_STUB + "; -1 and 4294967295 shown random on the real llama.cpp server",
)
OPENAI_RESPONSES: Final = Provider(
    name="OpenAI Responses API",
    integration="langchain_openai.ChatOpenAI",
    package="langchain-openai",
    unsupported=(
        "OpenAI's Responses API (use_responses_api=True) takes no seed and returns no "
        "system_fingerprint; use the Chat Completions API (the default)"
    ),
    tested="lock_model raises UnsupportedModelError (unit test)",
)
AZURE: Final = Provider(
    name="Azure OpenAI",
    integration="langchain_openai.AzureChatOpenAI",
    package="langchain-openai",
    seed_field="seed",
    wire=OPENAI.wire,
    fingerprint="system_fingerprint",
    tested=_STUB,
)

PROVIDERS: Final[tuple[Provider, ...]] = (
    OPENAI,
    OPENAI_COMPATIBLE,
    OPENAI_RESPONSES,
    AZURE,
    Provider(
        name="Ollama",
        integration="langchain_ollama.ChatOllama",
        package="langchain-ollama",
        seed_field="seed",
        wire=MappingProxyType(
            {
                "seed": "options.seed",
                "temperature": "options.temperature",
                "top_p": "options.top_p",
                "max_tokens": "options.num_predict",
            }
        ),
        # Ollama's engine reads -1 as random; its llama.cpp runner truncates
        # the seed to 32 bits (uint32), where 0xFFFFFFFF is random too.
        random_seeds=_LLAMA_CPP_RANDOM,
        seed_modulus=_UINT32,
        tested=_STUB,
    ),
    Provider(
        name="Mistral AI",
        integration="langchain_mistralai.ChatMistralAI",
        package="langchain-mistralai",
        seed_field="random_seed",
        wire=MappingProxyType({**_OPENAI_WIRE, "seed": "random_seed"}),
        tested=_STUB,
    ),
    Provider(
        name="Groq",
        integration="langchain_groq.ChatGroq",
        package="langchain-groq",
        seed_field='model_kwargs["seed"]',
        wire=_OPENAI_WIRE,
        # ChatGroq has no seed or top_p field; it sends model_kwargs as is.
        via_model_kwargs=("seed", "top_p"),
        fingerprint="system_fingerprint",
        tested=_STUB,
    ),
    Provider(
        name="Google Gemini",
        integration="langchain_google_genai.ChatGoogleGenerativeAI",
        package="langchain-google-genai",
        seed_field="seed",
        wire=MappingProxyType(
            {
                "seed": "generationConfig.seed",
                "temperature": "generationConfig.temperature",
                "top_p": "generationConfig.topP",
                "max_tokens": "generationConfig.maxOutputTokens",
            }
        ),
        seed_range=_INT32,  # GenerationConfig.seed is an int32
        tested=_STUB + ", REST transport (base_url)",
    ),
    Provider(
        name="DeepSeek",
        integration="langchain_deepseek.ChatDeepSeek",
        package="langchain-deepseek",
        seed_field="seed",
        wire=_OPENAI_WIRE,
        fingerprint="system_fingerprint",
        tested=_STUB,
    ),
    Provider(
        name="xAI",
        integration="langchain_xai.ChatXAI",
        package="langchain-xai",
        seed_field="seed",
        wire=_OPENAI_WIRE,
        fingerprint="system_fingerprint",
        tested=_STUB,
    ),
    Provider(
        name="Anthropic",
        integration="langchain_anthropic.ChatAnthropic",
        package="langchain-anthropic",
        unsupported="Anthropic's Messages API takes no seed",
        tested="lock_model raises UnsupportedModelError (unit test)",
    ),
    Provider(
        name="Amazon Bedrock Converse",
        integration="langchain_aws.ChatBedrockConverse",
        package="langchain-aws",
        unsupported=(
            "Bedrock's Converse API takes no seed (its inferenceConfig has maxTokens, "
            "temperature, topP and stopSequences only)"
        ),
        tested="lock_model raises UnsupportedModelError (unit test)",
    ),
)

# One row per class; `provider_of` picks ChatOpenAI's other two rows from its settings.
_BY_CLASS: Final[Mapping[str, Provider]] = {
    p.integration: p for p in PROVIDERS if p not in (OPENAI_COMPATIBLE, OPENAI_RESPONSES)
}
_OPENAI_HOSTS: Final = frozenset({"api.openai.com"})


def provider_of(model: Any) -> Provider | None:
    """The table row for ``model`` (its class or a parent class), or None."""
    for cls in type(model).__mro__:
        found = _BY_CLASS.get(f"{cls.__module__.partition('.')[0]}.{cls.__name__}")
        if found is OPENAI:
            if getattr(model, "use_responses_api", None):
                return OPENAI_RESPONSES
            base_url = getattr(model, "openai_api_base", None)
            if base_url and urlparse(base_url).hostname not in _OPENAI_HOSTS:
                return OPENAI_COMPATIBLE
        if found is not None:
            return found
    return None


def check_model(model: Any, seed: int) -> Provider | None:
    """Refuse a model whose API takes no seed, or a seed its backend reads as random.

    Raises `UnsupportedModelError` or `UnusableSeedError`; returns the row
    (None for a model not in the table).
    """
    provider = provider_of(model)
    if provider is None:
        return None
    if provider.unsupported:
        raise UnsupportedModelError(
            f"{type(model).__name__} cannot be locked: {provider.unsupported}. "
            "SeedLockCallbackHandler can still record and compare its outputs; "
            "see docs/providers.md for the models that take a seed."
        )
    if provider.is_random(seed):
        raise UnusableSeedError(
            seed,
            provider.name,
            "reads it as 'pick a random seed', so the lock would not lock; choose another seed",
        )
    if provider.seed_range is not None and not (
        provider.seed_range[0] <= seed <= provider.seed_range[1]
    ):
        low, high = provider.seed_range
        raise UnusableSeedError(seed, provider.name, f"takes seeds from {low} to {high} only")
    return provider


def unsupported_param(model: Any, name: str) -> UnsupportedModelError:
    """The error for a model with no field for the locked parameter ``name``."""
    kind = "a seed" if name == "seed" else f"the locked parameter {name!r}"
    remedy = "" if name == "seed" else " (remove it from the lock)"
    seeded = ", ".join(
        dict.fromkeys(p.integration.rpartition(".")[2] for p in PROVIDERS if p.seed_field)
    )
    return UnsupportedModelError(
        f"{type(model).__name__} has no field for {kind}, so it cannot be locked{remedy}. "
        f"Models that take a seed: {seeded} (docs/providers.md)."
    )
