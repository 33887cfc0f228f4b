"""Errors that tell the user how to fix the problem.

The UI turns them into ``gr.Error``; the CLI prints them without a traceback.
Nothing branches on the message text.
"""


class ChatStudioError(Exception):
    """Base class for every error meant to be shown to the user."""


class ModelLoadError(ChatStudioError):
    """A model could not be found or loaded."""


class SettingsError(ChatStudioError):
    """Decoding settings are invalid; the message names the field."""


class UnsupportedSettingError(SettingsError):
    """The active backend cannot honour a setting (e.g. beam search on llama.cpp)."""


class PersonaError(ChatStudioError):
    """A persona is unknown or its card is invalid."""


class InputError(ChatStudioError):
    """A message or history passed by the caller is malformed."""


class DocumentError(ChatStudioError):
    """A document could not be ingested; the message says why and what to do."""


class Cancelled(ChatStudioError):
    """The caller stopped the request (Stop, a closed tab, or nobody listening)."""


class BusyError(ChatStudioError):
    """The model stayed busy with other requests for the whole time a request may take."""
