"""The drift monitor's baseline cache: per request hash its known outputs, per
model its fingerprints, per (model, backend) its reproducibility rate, in
bounded LRU maps, loaded from store rows on a miss. Not thread-safe: the
monitor holds its lock around every use."""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

from langchain_seedlock._decide import BackendRate, ModelHistory, Output, RequestHistory
from langchain_seedlock._identity import BackendIdentity
from langchain_seedlock._store._base import FingerprintSeen, OutputSeen

_K = TypeVar("_K")
_V = TypeVar("_V")


class BaselineCache:
    """What this process knows, at most ``size`` entries per map."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.requests: OrderedDict[str, RequestHistory] = OrderedDict()
        self.models: OrderedDict[str, ModelHistory] = OrderedDict()
        self.rates: OrderedDict[tuple[str, str], BackendRate] = OrderedDict()
        self.missing_reported: set[str] = set()  # models whose missing fingerprint was logged

    def misses(self, request_hash: str, model_key: str) -> tuple[bool, bool]:
        """Whether the request, and the model, must be read from the store first."""
        return request_hash not in self.requests, model_key not in self.models

    def request(self, request_hash: str, outputs: list[OutputSeen] | None) -> RequestHistory:
        """The request's history; on a miss, built from the store's ``outputs``."""
        found = self.requests.get(request_hash)
        if found is not None:
            self.requests.move_to_end(request_hash)
            return found
        history = RequestHistory()
        for o in outputs or ():
            history.by_backend.setdefault(o.backend_id, {})[o.output_hash] = Output(
                o.count, o.first_seen, o.last_seen, o.backend_id,
                o.system_fingerprint, o.output_text, sketch=o.sketch,
            )  # fmt: skip
        return self._add(self.requests, request_hash, history)

    def model(self, model_key: str, fingerprints: list[FingerprintSeen] | None) -> ModelHistory:
        """The model's history; on a miss, built from the store's ``fingerprints``."""
        found = self.models.get(model_key)
        if found is not None:
            self.models.move_to_end(model_key)
            return found
        history = ModelHistory()
        for row in fingerprints or ():  # most recently seen last
            history.seen[row.system_fingerprint] = (row.first_seen, row.last_seen)
            if row.system_fingerprint is not None:
                history.last_fingerprint = row.system_fingerprint
            if row.identity is not None:
                history.identity = BackendIdentity.from_json(row.identity)
        return self._add(self.models, model_key, history)

    def rate(self, model_key: str, backend: str) -> BackendRate:
        """The rate of this process's repeat calls of the model under ``backend``."""
        key = (model_key, backend)
        found = self.rates.get(key)
        return found if found is not None else self._add(self.rates, key, BackendRate())

    def _add(self, table: OrderedDict[_K, _V], key: _K, value: _V) -> _V:
        table[key] = value
        if len(table) > self.size:
            table.popitem(last=False)
        return value
