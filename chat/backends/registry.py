"""Backends by name: each registers a factory; the CLI, the Model tab and the tests choose here.

As llama-cpp-python's chat formats: a name maps to a factory, and an unknown
name is an error that lists the valid ones. A registration also says which
decoding strategies the backend offers, so that a message about a missing one
("beam search needs the ... backend") is read off the registry instead of
naming a backend by hand. The built-in backends register in ``chat.models``
(their factories import the backend module, and its heavy libraries, only
when a model is loaded); a test or a plug-in may register its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chat.errors import ModelLoadError

if TYPE_CHECKING:
    from chat.backends.base import Backend
    from chat.models import ModelSpec


class UnknownBackend(ModelLoadError):
    """No backend is registered under this name."""


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model, whichever backend does it (each reads the options it has)."""

    device: str = "auto"
    n_ctx: int | None = None
    n_gpu_layers: int | None = None
    n_threads: int | None = None
    runtime: str = "auto"  # llama.cpp: in-process, subprocess or auto
    api_key: str | None = None  # a remote engine's
    parallel: int = 1  # sequences decoded together (llama.cpp)


@dataclass(frozen=True)
class BackendKind:
    """One registered backend: its name, its factory and what it declares before loading."""

    name: str
    load: Callable[[ModelSpec, LoadOptions], Backend]
    strategies: frozenset[str]
    # ``--backend NAME --model X`` -> the spec to load; None: chosen another way (a URL)
    resolve: Callable[[str | None], ModelSpec] | None = None
    for_tests: bool = False  # kept out of the hints users read


_KINDS: dict[str, BackendKind] = {}


def register(
    name: str,
    load: Callable[[ModelSpec, LoadOptions], Backend],
    strategies: frozenset[str] | set[str],
    resolve: Callable[[str | None], ModelSpec] | None = None,
    for_tests: bool = False,
    replace: bool = False,
) -> BackendKind:
    """Register the factory ``load`` under ``name``; a name is taken once unless ``replace``."""
    if name in _KINDS and not replace:
        raise ValueError(f"A backend named {name!r} is already registered")
    kind = BackendKind(name, load, frozenset(strategies), resolve, for_tests)
    _KINDS[name] = kind
    return kind


def unregister(name: str) -> None:
    """Forget ``name`` (a test's own registration)."""
    _KINDS.pop(name, None)


def _builtins() -> dict[str, BackendKind]:
    import chat.models  # noqa: F401  (registers the built-in backends)

    return _KINDS


def names(include_tests: bool = False) -> list[str]:
    """The registered names, in registration order (test stand-ins only when asked)."""
    return [n for n, k in _builtins().items() if include_tests or not k.for_tests]


def describe(names_: list[str]) -> str:
    """``llama-cpp, transformers, standin (for tests)``: names as an error lists them."""
    kinds = _builtins()
    return ", ".join(f"{n} (for tests)" if n in kinds and kinds[n].for_tests else n for n in names_)


def get(name: str) -> BackendKind:
    """The backend registered as ``name``; ``UnknownBackend`` listing the valid names if none."""
    kinds = _builtins()
    if name not in kinds:
        raise UnknownBackend(
            f"Unknown backend {name!r}; choose one of: {describe(names(include_tests=True))}"
        )
    return kinds[name]


def offering(strategy: str) -> list[str]:
    """The user-facing backends that declare ``strategy`` (e.g. which can beam search)."""
    return [n for n, k in _builtins().items() if not k.for_tests and strategy in k.strategies]


def load(spec: ModelSpec, options: LoadOptions | None = None) -> Backend:
    """Load ``spec`` with the backend it names."""
    return get(spec.backend).load(spec, options or LoadOptions())
