"""Small helpers shared by the document loaders: error messages and sizes."""

from __future__ import annotations

from chat.errors import DocumentError

MIB = 1024 * 1024


def _error(name: str, problem: str) -> DocumentError:
    return DocumentError(f"{name} {problem}")


def _mb(n: int) -> str:
    value = n / MIB
    if value == int(value):
        return f"{value:.0f} MB"
    return f"{value:.1f} MB" if value >= 1 else f"{value:.2f} MB"


def _reason(exc: BaseException) -> str:
    """A short, single-line description of a parser's exception."""
    text = " ".join(str(exc).split())
    return (text[:150] + "...") if len(text) > 150 else (text or type(exc).__name__)
