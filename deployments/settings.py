"""The HTTP service's settings: the engine's (images, prompts, URL input) plus its own."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from sam3_core.settings import EngineSettings, MiB


class ServiceSettings(EngineSettings):
    """Read from the environment of each ingress replica (`SAM3_<NAME>`)."""

    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="Comma-separated API keys; auth is off when unset."
    )
    max_request_bytes: int = Field(
        40 * MiB, gt=0, description="HTTP body limit, checked before the body is read."
    )
    retry_after_seconds: int = Field(
        1, ge=0, description="Retry-After sent with 503 when the service is overloaded."
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value
