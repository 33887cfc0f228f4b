"""Personas: YAML cards that shape who answers (system prompt, greeting, few-shot examples)."""

from personas.cards import Persona, PersonaStore

__all__ = ["Persona", "PersonaStore"]
