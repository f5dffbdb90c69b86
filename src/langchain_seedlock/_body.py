"""The request body as the server receives it, whatever route a parameter took.

A LangChain request carries parameters at its top level and in mappings
inside it, each merged into the same JSON body on its way out:

- ``model_kwargs``: LangChain integrations merge it into the top level
  (langchain-openai spreads it over its own fields in ``_default_params``;
  other integrations' invocation params keep it nested);
- ``options``: ``ChatOllama`` sends a call-time ``options`` mapping *instead
  of* the options it builds from its fields (seed and temperature included);
- ``generation_config``: ``ChatGoogleGenerativeAI`` merges a call-time
  mapping over the generation config it builds from its fields (``seed``,
  ``temperature``, ``topP``...);
- ``extra_body``: the openai SDK merges it over the JSON body it built from
  the documented parameters, a key of ``extra_body`` replacing the same key
  (``openai._base_client._merge_mappings``: shallow, the later mapping wins,
  a value that is ``openai.Omit`` removes the key).

``extra_query`` entries travel as URL query parameters, not in the body;
they are checked against the lock on their own (`_enforce`). Headers
(``extra_headers``) carry no sampling parameter for OpenAI or any
OpenAI-compatible server, and are not read.

Everything that decides about "what was sent" (the lock checks in
`_enforce`, the request hash in `_hashing`) reads the body through
`effective_params`: one rule, one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from openai import NotGiven, Omit

# Mappings whose entries reach the body, in the order they are applied (a later one wins).
PARAM_CONTAINERS: Final = ("model_kwargs", "options", "generation_config", "extra_body")
# URL query parameters of the request (the openai SDK's ``extra_query``).
QUERY_KEY: Final = "extra_query"


_OMITTED = (Omit, NotGiven)


def is_omitted(value: Any) -> bool:
    """Whether ``value`` is the openai SDK's marker for "leave this key out"."""
    return isinstance(value, _OMITTED)


def effective_params(params: Mapping[str, Any], *, keep_omitted: bool = False) -> Mapping[str, Any]:
    """``params`` with the entries of its `PARAM_CONTAINERS` merged over the top
    level, as the server receives them; ``params`` itself when it has none.

    Keys whose value is an `openai.Omit` / `openai.NotGiven` marker are left
    out, as the SDK leaves them out of the body; with ``keep_omitted`` they are
    kept (the lock checks treat an omitted locked parameter as an override,
    not as a parameter the integration never sent).
    """
    # Runs on every call, usually on a payload with none of these: plain lookups first.
    if (
        "extra_body" not in params
        and "model_kwargs" not in params
        and "options" not in params
        and "generation_config" not in params
    ):
        if keep_omitted or not any(isinstance(v, _OMITTED) for v in params.values()):
            return params
        return {k: v for k, v in params.items() if not isinstance(v, _OMITTED)}
    nested = [value for key in PARAM_CONTAINERS if isinstance(value := params.get(key), Mapping)]
    body = {
        k: v
        for k, v in params.items()
        if not (k in PARAM_CONTAINERS and isinstance(v, Mapping))  # merged below
    }
    for mapping in nested:
        body.update(mapping)
    if keep_omitted:
        return body
    return {k: v for k, v in body.items() if not isinstance(v, _OMITTED)}
