"""Per-request and per-session limits: what one visitor may make the app do.

Every limit is a field with bounds and a description, so the command line,
environment variables and the checks here all come from one place. The checks
run before any model work, and each refusal says which limit and how to change it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from chat.errors import InputError

MB = 2**20


class Limits(BaseModel):
    """Bounds on the work and storage one request or one session can cause."""

    model_config = ConfigDict(extra="forbid")

    max_upload_mb: float = Field(20, gt=0, le=1024, description="Largest document accepted.")
    max_request_upload_mb: float = Field(
        50, gt=0, le=4096, description="Most bytes uploaded in one request, all files together."
    )
    max_files_per_request: int = Field(
        10, ge=1, le=1000, description="Most files uploaded in one request."
    )
    max_session_upload_mb: float = Field(
        100, gt=0, le=100_000, description="Most document bytes one session may ingest in all."
    )
    max_session_chunks: int = Field(
        50_000,
        ge=1,
        le=100_000_000,
        description="Most chunks one session may have embedded in all (one request: at most "
        "20,000); each chunk is a slice of embedding work.",
    )
    max_upload_storage_mb: float = Field(
        1024,
        gt=0,
        le=1_000_000,
        description="Disk that uploads waiting to be ingested may take; more uploads are "
        "refused until those are processed or expire.",
    )
    upload_ttl_minutes: float = Field(
        60,
        gt=0,
        le=10_080,
        description="An upload not ingested within this time is deleted (uploads left by an "
        "earlier run are deleted at start).",
    )
    max_request_body_mb: float = Field(
        16, gt=0, le=1024, description="Largest request body other than an upload (JSON)."
    )
    max_message_chars: int = Field(
        16_000, ge=100, le=10_000_000, description="Longest chat message, in characters."
    )
    max_history_messages: int = Field(
        400, ge=2, le=100_000, description="Most earlier messages sent with one chat request."
    )
    max_history_chars: int = Field(
        400_000,
        ge=1000,
        le=100_000_000,
        description="Most characters of earlier messages sent with one chat request.",
    )
    max_reply_tokens: int = Field(
        2048, ge=1, le=32768, description="Largest max_new_tokens one request may ask for."
    )
    max_request_seconds: float = Field(
        300, gt=0, le=86_400, description="Longest one generation may run before it is stopped."
    )
    session_ttl_minutes: float = Field(
        30,
        gt=0,
        le=10_080,
        description="A session with no open browser tab that stays idle this long is ended "
        "and its uploads deleted (API clients).",
    )
    login_attempts: int = Field(
        5,
        ge=1,
        le=10_000,
        description="Failed logins allowed per client address and per user name within "
        "10 minutes before a wait is imposed.",
    )
    min_free_mb: float = Field(
        256,
        ge=0,
        le=10_000_000,
        description="Free disk the document store keeps in reserve; ingest refuses to go below.",
    )

    # -- checks -----------------------------------------------------------------

    def check_chat(self, message: object, history: object, max_new_tokens: int) -> None:
        """Refuse a chat request over the limits, before any model work."""
        if isinstance(message, str) and len(message) > self.max_message_chars:
            raise InputError(
                f"message: {len(message):,} characters is over the limit of "
                f"{self.max_message_chars:,} (--max-message-chars); shorten it or send it in parts"
            )
        if isinstance(history, list):
            if len(history) > self.max_history_messages:
                raise InputError(
                    f"history: {len(history):,} messages is over the limit of "
                    f"{self.max_history_messages:,} (--max-history-messages); send only the "
                    "recent turns"
                )
            chars = sum(len(m.get("content") or "") for m in history if isinstance(m, dict))
            if chars > self.max_history_chars:
                raise InputError(
                    f"history: {chars:,} characters is over the limit of "
                    f"{self.max_history_chars:,} (--max-history-chars); send only the recent turns"
                )
        if max_new_tokens > self.max_reply_tokens:
            raise InputError(
                f"max_new_tokens: {max_new_tokens} is over this app's limit of "
                f"{self.max_reply_tokens} (--max-reply-tokens)"
            )

    @property
    def upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * MB)
