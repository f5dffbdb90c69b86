"""Repairs after ``os.fork()``: what a child process must not inherit as it is.

A forked child has one thread (the one that called ``fork``) and a copy of
the parent's memory. So in the child:

- a lock that another thread held at the fork stays held forever;
- background threads (the store writer, the monitor's reader, a connection
  pool's workers) do not exist;
- connections are the parent's: a SQLite handle whose file locks belong to
  the parent, a PostgreSQL socket that the parent is using. Using one from
  both processes corrupts the stream; even closing a PostgreSQL connection
  in the child sends the server a Terminate that ends the parent's session.

Objects that own such things register repairs here (``register``): weakly,
so registering never keeps an object alive, and ``os.register_at_fork`` is
called once for the whole package however many objects there are. Each
repair only resets state; threads and connections are made again lazily by
the next call that needs them, never inside the fork hook.

``keep_forever`` holds, in the child, what the parent still uses: an object
that is never collected is never finalized (no Terminate sent, no SQLite
close racing the parent).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")
_Hook = Callable[[Any], None] | None

# key -> (weak ref to the owner, before, after in parent, after in child)
_HOOKS: dict[int, tuple[weakref.ref[Any], _Hook, _Hook, _Hook]] = {}
_KEYS = itertools.count()  # next() on a count is atomic: registration needs no lock
_KEPT: list[Any] = []


def register(
    owner: _T,
    *,
    before: Callable[[_T], None] | None = None,
    after_in_parent: Callable[[_T], None] | None = None,
    after_in_child: Callable[[_T], None] | None = None,
) -> None:
    """Call the hooks with ``owner`` around every ``os.fork()`` while ``owner`` lives.

    ``before`` runs in the parent just before the fork (in the thread that
    forks); ``after_in_parent`` just after, in the parent; ``after_in_child``
    first thing in the child. A hook that raises is ignored (a fork must not
    fail for instrumentation).
    """
    key = next(_KEYS)
    ref = weakref.ref(owner, lambda _ref: _HOOKS.pop(key, None))
    _HOOKS[key] = (ref, before, after_in_parent, after_in_child)


def keep_forever(*objects: Any) -> None:
    """Never collect ``objects`` in this (child) process: see the module docstring."""
    _KEPT.extend(objects)


def _run(which: int) -> None:
    # list(): hooks may register objects or drop dead ones while this runs.
    entries = list(_HOOKS.values())
    if which == 1:  # before: the reverse order, as os.register_at_fork does
        entries.reverse()
    for ref, *hooks in entries:
        owner, hook = ref(), hooks[which - 1]
        if owner is not None and hook is not None:
            with contextlib.suppress(Exception):
                hook(owner)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(
        before=lambda: _run(1),
        after_in_parent=lambda: _run(2),
        after_in_child=lambda: _run(3),
    )
