"""Personas: YAML cards that shape who answers (system prompt, greeting, few-shot examples)."""

from personas.cards import Persona
from personas.store import PersonaStore

__all__ = ["Persona", "PersonaStore"]
