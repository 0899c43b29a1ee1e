"""Settings of the deployments beyond the engine's: the ingress's (the request limits it
shares with the engine, plus what only the HTTP side uses: API keys, the body limit, URL
input, `Retry-After`), and the segmenter replicas' own (hand-offs between replicas)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sam3_core.protocol.url_fetch import UrlPolicy
from sam3_core.settings import MiB, RequestLimits


class IngressSettings(RequestLimits):
    """Read from the environment of each ingress replica (`SAM3_<NAME>`)."""

    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="Comma-separated API keys; auth is off when unset."
    )
    max_request_bytes: int = Field(
        40 * MiB, gt=0, description="HTTP body limit, checked before the body is read."
    )
    max_body_key_bytes: int = Field(
        MiB,
        gt=0,
        description="Largest body searched for an api_key when none came in the "
        "Authorization header or the query; a larger one is refused (401) unread.",
    )
    retry_after_seconds: int = Field(
        1, ge=0, description="Retry-After sent with 503 when the service is overloaded."
    )

    # URL input (off by default; SSRF-guarded when on).
    allow_url_input: bool = Field(False, description="Accept {'type': 'url'} images.")
    url_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Hosts URL images may come from ('example.com' or '*.example.com').",
    )
    url_allow_private_networks: bool = Field(
        False, description="Let URL input reach private, loopback and link-local addresses."
    )
    url_timeout_seconds: float = Field(10.0, gt=0, description="Whole-fetch time limit.")
    url_max_redirects: int = Field(3, ge=0, description="Redirects followed (each re-checked).")

    # Label Studio's ML-backend protocol (/label-studio).
    label_studio_url: str | None = Field(
        None,
        description="Label Studio's address, where task images on its own paths "
        "(/data/upload/...) are fetched from.",
    )
    label_studio_api_key: SecretStr | None = Field(
        None, description="Label Studio's API token, sent when fetching its images."
    )
    label_studio_score_threshold: float = Field(
        0.5, ge=0, le=1, description="Pre-annotation: keep instances scoring at least this."
    )
    label_studio_max_images: int = Field(
        10000, ge=1, description="Label Studio image paths remembered by digest, per ingress."
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @field_validator("url_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip().lower() for h in value.split(",") if h.strip())
        return value

    def url_policy(self) -> UrlPolicy | None:
        """What URL input may reach; None when it is off."""
        if not self.allow_url_input:
            return None
        return UrlPolicy(
            allowed_hosts=self.url_allowed_hosts,
            allow_private_networks=self.url_allow_private_networks,
            max_bytes=self.max_image_bytes,
            timeout_seconds=self.url_timeout_seconds,
            max_redirects=self.url_max_redirects,
        )


class SegmenterSettings(BaseSettings):
    """Read from the environment of each segmenter replica (`SAM3_<NAME>`), beside the
    engine's `EngineSettings`."""

    model_config = SettingsConfigDict(env_prefix="SAM3_", extra="ignore", frozen=True)

    handoff_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Longest a replica waits for one step of a hand-off: a request for an "
        "image moving to it, a call to another replica. Past it, the image counts as lost.",
    )
