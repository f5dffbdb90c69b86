"""Issue 15 part 3: the seed reaches the wire for each integration that takes one.

Each seed-capable integration is locked with `lock_model` and sent to a local
stub speaking its wire format (tests/_fixtures/stub_providers.py): the request
body the stub received holds the seed and the locked parameters under the
provider's names (the paths in `_providers.PROVIDERS`), and the real
integration parses the stub's answer. Integrations that take no seed, and
seeds a backend reads as "random", are refused with typed errors. The table
in docs/providers.md is checked against the module's data.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.language_models import BaseChatModel
from langchain_openai import AzureChatOpenAI, ChatOpenAI

from langchain_seedlock import (
    LockedChatModel,
    LockedChatOpenAI,
    LockViolationError,
    SeedLock,
    UnsupportedModelError,
    UnusableSeedError,
    lock_model,
)
from langchain_seedlock._providers import (
    OPENAI,
    OPENAI_COMPATIBLE,
    PROVIDERS,
    Provider,
    provider_of,
)
from tests._fixtures.stub_providers import REPLY, ProviderStub

pytestmark = pytest.mark.filterwarnings(
    # google-genai's async client subclasses aiohttp.ClientSession, which aiohttp deprecates.
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)

LOCK = SeedLock(seed=7, temperature=0.3, top_p=0.9, max_tokens=50)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "providers.md"
EXTRA = "the providers-test extra: pip install -e '.[test]'"


def _integration(module: str, name: str) -> Any:
    pytest.importorskip(module, reason=f"{module} not installed ({EXTRA})")
    return getattr(importlib.import_module(module), name)


# Each stub-tested row: how to point its integration at the stub, and the
# request path the integration must use.
Factory = Callable[[str], BaseChatModel]


def _ollama(url: str) -> BaseChatModel:
    chat_ollama = _integration("langchain_ollama", "ChatOllama")
    return chat_ollama(model="llama3.2", base_url=url)  # type: ignore[no-any-return]


def _mistral(url: str, **kwargs: Any) -> BaseChatModel:
    chat_mistral = _integration("langchain_mistralai", "ChatMistralAI")
    return chat_mistral(  # type: ignore[no-any-return]
        model="mistral-small-latest", api_key="m-key", endpoint=f"{url}/v1", max_retries=1, **kwargs
    )


def _groq(url: str, **kwargs: Any) -> BaseChatModel:
    chat_groq = _integration("langchain_groq", "ChatGroq")
    return chat_groq(  # type: ignore[no-any-return]
        model="llama-3.1-8b-instant", api_key="g-key", base_url=url, max_retries=0, **kwargs
    )


def _gemini(url: str) -> BaseChatModel:
    chat_google = _integration("langchain_google_genai", "ChatGoogleGenerativeAI")
    # langchain-google-genai 4 uses the google-genai SDK over REST (httpx):
    # base_url points it at any host, no gRPC involved.
    return chat_google(model="gemini-2.5-flash", api_key="gm-key", base_url=url)  # type: ignore[no-any-return]


def _deepseek(url: str) -> BaseChatModel:
    chat_deepseek = _integration("langchain_deepseek", "ChatDeepSeek")
    return chat_deepseek(  # type: ignore[no-any-return]
        model="deepseek-chat", api_key="d-key", api_base=f"{url}/v1", max_retries=0
    )


def _xai(url: str) -> BaseChatModel:
    chat_xai = _integration("langchain_xai", "ChatXAI")
    return chat_xai(  # type: ignore[no-any-return]
        model="grok-4", api_key="x-key", xai_api_base=f"{url}/v1", max_retries=0
    )


def _openai_compatible(url: str) -> BaseChatModel:
    return ChatOpenAI(model="smollm2", base_url=f"{url}/v1", api_key="sk-local", max_retries=0)


def _azure(url: str) -> BaseChatModel:
    return AzureChatOpenAI(
        azure_deployment="gpt-4o-mini",
        azure_endpoint=url,
        api_version="2024-10-21",
        api_key="az-key",
        max_retries=0,
    )


STUBBED: dict[str, tuple[Factory, str]] = {
    OPENAI_COMPATIBLE.name: (_openai_compatible, "/v1/chat/completions"),
    "Azure OpenAI": (_azure, "/openai/deployments/gpt-4o-mini/chat/completions"),
    "Ollama": (_ollama, "/api/chat"),
    "Mistral AI": (_mistral, "/v1/chat/completions"),
    "Groq": (_groq, "/openai/v1/chat/completions"),
    "Google Gemini": (_gemini, "/models/gemini-2.5-flash:"),
    "DeepSeek": (_deepseek, "/v1/chat/completions"),
    "xAI": (_xai, "/v1/chat/completions"),
}
ROWS = {p.name: p for p in PROVIDERS}


def _at(body: dict[str, Any], path: str) -> Any:
    value: Any = body
    for key in path.split("."):
        assert isinstance(value, dict), f"{path!r} not in the request: {body}"
        assert key in value, f"{path!r} not in the request: {body}"
        value = value[key]
    return value


async def _call(model: BaseChatModel, how: str) -> Any:
    if how == "invoke":
        return model.invoke("Name a red planet.")
    if how == "ainvoke":
        return await model.ainvoke("Name a red planet.")
    full: Any = None
    if how == "stream":
        for chunk in model.stream("Name a red planet."):
            full = chunk if full is None else full + chunk
    else:
        async for chunk in model.astream("Name a red planet."):
            full = chunk if full is None else full + chunk
    return full


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("name", list(STUBBED))
async def test_the_lock_reaches_the_wire(provider_stub: ProviderStub, name: str, how: str) -> None:
    factory, path = STUBBED[name]
    row = ROWS[name]
    provider_stub.fingerprint = "fp_stub_7" if row.fingerprint else None
    model = lock_model(factory(provider_stub.url), LOCK)
    assert provider_of(model.model if isinstance(model, LockedChatModel) else model) is row

    msg = await _call(model, how)

    received = provider_stub.last
    assert path in received.path
    assert len(provider_stub.requests) == 1
    for param, wire_path in row.wire.items():
        assert _at(received.body, wire_path) == LOCK.canonical()[param], (param, wire_path)
    # The answer was parsed by the real integration, and recorded.
    assert msg.content == "".join(REPLY)
    meta = msg.response_metadata
    assert meta["seed"] == 7
    assert meta["seedlock_lock_hash"] == LOCK.lock_hash
    assert len(meta["seedlock_request_hash"]) == 64
    assert meta["system_fingerprint"] == ("fp_stub_7" if row.fingerprint else None)


def test_every_row_that_claims_a_stub_test_has_one() -> None:
    claimed = {p.name for p in PROVIDERS if "local stub" in p.tested}
    assert claimed == set(STUBBED)


@pytest.mark.parametrize(
    ("name", "argument"),
    [
        ("Ollama", {"seed": 5}),
        ("Ollama", {"options": {"seed": 5}}),
        ("Mistral AI", {"random_seed": 5}),
        ("Groq", {"seed": 5}),
        ("Google Gemini", {"seed": 5}),
        ("Google Gemini", {"temperature": 1.0}),
        # Merged over the config built from the fields: a route of its own.
        ("Google Gemini", {"generation_config": {"seed": 5}}),
        ("Google Gemini", {"generation_config": {"topP": 0.5}}),
        ("Google Gemini", {"generation_config": {"maxOutputTokens": 10}}),
        ("DeepSeek", {"seed": 5}),
        ("xAI", {"max_tokens": 10}),
    ],
)
def test_a_call_time_override_is_refused_before_sending(
    provider_stub: ProviderStub, name: str, argument: dict[str, Any]
) -> None:
    model = lock_model(STUBBED[name][0](provider_stub.url), LOCK)
    with pytest.raises(LockViolationError) as caught:
        model.invoke("hi", **argument)
    assert caught.value.locked == LOCK.canonical()[caught.value.field]
    assert provider_stub.requests == []


def test_warn_sends_the_locked_seed_in_ollama_options(provider_stub: ProviderStub) -> None:
    model = lock_model(_ollama(provider_stub.url), LOCK.replace(on_violation="warn"))
    model.invoke("hi", options={"seed": 5, "num_ctx": 512})
    options = provider_stub.last.body["options"]
    assert options["seed"] == 7
    assert options["num_ctx"] == 512
    assert options["num_predict"] == 50


def test_warn_sends_the_locked_values_in_gemini_generation_config(
    provider_stub: ProviderStub,
) -> None:
    model = lock_model(_gemini(provider_stub.url), LOCK.replace(on_violation="warn"))
    model.invoke("hi", generation_config={"seed": 5, "top_p": 0.5, "top_k": 3})
    config = provider_stub.last.body["generationConfig"]
    assert (config["seed"], config["topP"], config["topK"]) == (7, 0.9, 3)


def test_groq_seed_travels_in_model_kwargs(provider_stub: ProviderStub) -> None:
    # ChatGroq has no seed field: the lock puts it into model_kwargs, which it sends.
    locked = lock_model(_groq(provider_stub.url, model_kwargs={"seed": 7}), LOCK)
    assert isinstance(locked, LockedChatModel)
    assert locked.model.model_kwargs == {"seed": 7, "top_p": 0.9}  # type: ignore[attr-defined]
    with pytest.raises(LockViolationError, match="seed=99"):
        lock_model(_groq(provider_stub.url, model_kwargs={"seed": 99}), LOCK)


def test_an_integration_default_is_not_a_conflict_but_a_user_value_is(
    provider_stub: ProviderStub,
) -> None:
    # ChatMistralAI's temperature defaults to 0.7: the lock replaces it...
    locked = lock_model(_mistral(provider_stub.url), LOCK)
    assert locked.model.temperature == 0.3  # type: ignore[attr-defined]
    # ...but 0.7 given by the user conflicts with the lock's 0.3.
    with pytest.raises(LockViolationError, match=r"temperature=0\.7"):
        lock_model(_mistral(provider_stub.url, temperature=0.7), LOCK)


# -- seeds a backend reads as "random" ---------------------------------------
RANDOM_ON_LLAMA_CPP = [-1, 0xFFFFFFFF, 2**33 - 1, -(2**32) - 1]


@pytest.mark.parametrize("seed", RANDOM_ON_LLAMA_CPP)
def test_a_random_seed_is_refused_for_ollama(provider_stub: ProviderStub, seed: int) -> None:
    with pytest.raises(UnusableSeedError) as caught:
        lock_model(_ollama(provider_stub.url), LOCK.replace(seed=seed))
    err = caught.value
    assert isinstance(err, UnsupportedModelError)
    assert (err.field, err.value, err.provider) == ("seed", seed, "Ollama")
    assert "random" in str(err)
    assert provider_stub.requests == []


@pytest.mark.parametrize("seed", RANDOM_ON_LLAMA_CPP)
def test_a_random_seed_is_refused_for_an_openai_compatible_server(
    provider_stub: ProviderStub, seed: int
) -> None:
    lock = LOCK.replace(seed=seed)
    with pytest.raises(UnusableSeedError, match=r"llama\.cpp"):
        lock_model(_openai_compatible(provider_stub.url), lock)
    with pytest.raises(UnusableSeedError):
        LockedChatOpenAI(model="m", base_url=f"{provider_stub.url}/v1", api_key="k", lock=lock)


@pytest.mark.parametrize("seed", [0, 0xFFFFFFFE, 2**32, -2])
def test_neighbouring_seeds_lock_a_llama_cpp_backend(
    provider_stub: ProviderStub, seed: int
) -> None:
    lock_model(_ollama(provider_stub.url), LOCK.replace(seed=seed)).invoke("hi")
    assert provider_stub.last.body["options"]["seed"] == seed


def test_openai_and_azure_keep_accepting_every_seed() -> None:
    # api.openai.com and Azure document no "random" seed value: unchanged behaviour.
    lock = LOCK.replace(seed=-1)
    openai_model = lock_model(ChatOpenAI(model="gpt-4o-mini", api_key="sk-x"), lock)
    assert provider_of(openai_model) is OPENAI
    assert openai_model.seed == -1  # type: ignore[attr-defined]
    azure = lock_model(_azure("https://example-resource.openai.azure.com"), lock)
    assert azure.seed == -1  # type: ignore[attr-defined]


def test_gemini_takes_32_bit_seeds_only(provider_stub: ProviderStub) -> None:
    with pytest.raises(UnusableSeedError, match="-2147483648 to 2147483647"):
        lock_model(_gemini(provider_stub.url), LOCK.replace(seed=2**31))
    lock_model(_gemini(provider_stub.url), LOCK.replace(seed=-(2**31))).invoke("hi")
    assert provider_stub.last.body["generationConfig"]["seed"] == -(2**31)


@pytest.mark.parametrize(
    ("row", "seed", "random"),
    [
        (OPENAI, -1, False),
        (OPENAI_COMPATIBLE, -1, True),
        (OPENAI_COMPATIBLE, 2**32 + 0xFFFFFFFF, True),
        (OPENAI_COMPATIBLE, 0xFFFFFFFE, False),
        (ROWS["Mistral AI"], -1, False),
    ],
)
def test_is_random(row: Provider, seed: int, random: bool) -> None:
    assert row.is_random(seed) is random


@given(
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.integers(min_value=-(2**31), max_value=2**31 - 1).map(lambda k: k * 2**32 - 1)
)
def test_llama_cpp_random_seeds_are_the_ones_with_all_low_32_bits_set(seed: int) -> None:
    # llama.cpp casts the seed to uint32 and draws a random one for 0xFFFFFFFF.
    expected = seed & 0xFFFFFFFF == 0xFFFFFFFF
    assert OPENAI_COMPATIBLE.is_random(seed) is expected
    assert ROWS["Ollama"].is_random(seed) is expected
    assert not ROWS["Mistral AI"].is_random(seed)


# -- models that take no seed -------------------------------------------------
def _anthropic() -> BaseChatModel:
    chat_anthropic = _integration("langchain_anthropic", "ChatAnthropic")
    return chat_anthropic(model="claude-sonnet-4-5", api_key="a-key")  # type: ignore[no-any-return]


def _bedrock() -> BaseChatModel:
    converse = _integration("langchain_aws", "ChatBedrockConverse")
    return converse(  # type: ignore[no-any-return]
        model="anthropic.claude-3-5-sonnet-20240620-v1:0",
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret-example",
        disable_streaming=False,
    )


class ResponsesSubclass(ChatOpenAI):
    """A ChatOpenAI subclass: wrapped by LockedChatModel, not LockedChatOpenAI."""


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_anthropic, "Anthropic's Messages API takes no seed"),
        (_bedrock, "Bedrock's Converse API takes no seed"),
        (
            lambda: ResponsesSubclass(model="gpt-4o", api_key="sk-x", use_responses_api=True),
            "Responses API",
        ),
        (
            lambda: ChatOpenAI(model="gpt-4o", api_key="sk-x", use_responses_api=True),
            "use_responses_api=True",
        ),
    ],
)
def test_a_model_that_takes_no_seed_is_refused(
    make: Callable[[], BaseChatModel], reason: str
) -> None:
    model = make()
    with pytest.raises(UnsupportedModelError, match=reason):
        lock_model(model, LOCK)
    with pytest.raises(UnsupportedModelError, match=reason):
        LockedChatModel(model=model, lock=LOCK)


def test_an_unknown_model_without_a_seed_field_names_the_ones_that_take_one() -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    with pytest.raises(UnsupportedModelError, match="no field for a seed") as caught:
        lock_model(FakeListChatModel(responses=["x"]), SeedLock(seed=1))
    assert "ChatOllama" in str(caught.value)
    assert "ChatMistralAI" in str(caught.value)
    assert "ChatAnthropic" not in str(caught.value)


# -- docs/providers.md is the table of the module -----------------------------
def _cell(text: str | None) -> str:
    return f"`{text}`" if text else "none"


def expected_row(p: Provider) -> list[str]:
    if p.unsupported:
        random = "n/a"
    elif p.random_seeds:
        random = ", ".join(f"`{s}`" for s in p.random_seeds)
        if p.seed_modulus is not None:
            random += f" (any seed equal to one of them modulo 2^{p.seed_modulus.bit_length() - 1})"
    else:
        random = "none documented"
    if p.seed_range is not None:
        random += f"; seeds from `{p.seed_range[0]}` to `{p.seed_range[1]}` only"
    others = ", ".join(
        f"`{p.wire[k]}`" for k in ("temperature", "top_p", "max_tokens") if k in p.wire
    )
    return [
        p.name,
        f"`{p.integration.rpartition('.')[2]}` ({p.package})",
        _cell(p.seed_field) if not p.unsupported else f"none: {p.unsupported}",
        _cell(p.wire.get("seed")),
        others or "n/a",
        _cell(p.fingerprint),
        random,
        p.tested,
    ]


def docs_rows() -> list[list[str]]:
    text = DOCS.read_text(encoding="utf-8")
    table = text.split("<!-- providers-table -->")[1].strip().split("\n\n")[0]
    lines = table.splitlines()
    rows = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    return rows[2:]  # header and separator


def test_the_docs_table_is_the_module_table() -> None:
    assert docs_rows() == [expected_row(p) for p in PROVIDERS]


def test_the_docs_table_would_notice_a_change() -> None:
    changed = dataclasses.replace(OPENAI, fingerprint=None)
    assert expected_row(changed) not in docs_rows()
