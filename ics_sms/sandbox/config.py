"""The sandbox's configuration: one typed, frozen object passed to :func:`create_app`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["SandboxConfig"]


class SandboxConfig(BaseModel):
    """How the sandbox behaves. Durations carry their unit in the name.

    ``accounts`` maps an ICS user to its token (the bearer token, or the Basic password).
    With no accounts at all, any non-empty credentials are accepted.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    accounts: dict[str, SecretStr] = Field(default_factory=dict)
    seed: int | None = Field(default=None, description="Seed of every random choice.")

    delivery_ratio: float = Field(default=0.95, ge=0, le=1)
    click_ratio: float = Field(default=0.3, ge=0, le=1)
    duplicate_receipt_ratio: float = Field(
        default=0.0, ge=0, le=1, description="Share of receipts posted twice (ICS does that)."
    )

    receipt_delay_ms: float = Field(default=1000.0, ge=0)
    receipt_jitter_ms: float = Field(default=0.0, ge=0)
    click_delay_ms: float = Field(default=2000.0, ge=0, description="After the delivery.")
    receipt_batch_size: int = Field(default=500, ge=1, le=10_000)
    receipt_flush_ms: float = Field(default=100.0, ge=0)
    receipt_concurrency: int = Field(default=4, ge=1, le=256)
    receipt_timeout_s: float = Field(default=10.0, gt=0)
    receipt_max_attempts: int = Field(default=10, ge=1, le=100)
    receipt_retry_base_ms: float = Field(default=500.0, ge=0)
    receipt_retry_cap_ms: float = Field(default=30_000.0, ge=0)
    default_dlr_url: str | None = Field(
        default=None, description="The portal-configured URL, used when a request has no dlrurl."
    )

    latency_ms: float = Field(default=0.0, ge=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    throttle_per_s: float | None = Field(default=None, gt=0, description="Records per second.")
    outage_at_s: float = Field(default=0.0, ge=0, description="Outage start, after start-up.")
    outage_s: float = Field(default=0.0, ge=0, description="Outage length; 0 means none.")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
