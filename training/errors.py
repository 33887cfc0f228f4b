"""Training errors: each message says what to do instead."""

from __future__ import annotations

from chat.errors import ChatStudioError


class TrainingError(ChatStudioError):
    """A dataset, a method or a job cannot be trained as asked; the message says why and how."""


class TrainingBusy(TrainingError):
    """A training job is already running (one at a time for the whole app)."""


class UnknownAdapter(TrainingError):
    """No adapter with that id exists (or it belongs to someone else)."""
