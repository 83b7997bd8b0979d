"""Senders: what an operator configures once, kept in a TOML file.

The file holds a table per sender and the name of the default one::

    default = "acme-otp"

    [senders.acme-otp]
    type = "service_implicit"
    sender_id = "ACMEIN"
    username = "acme"
    token_env = "ACME_ICS_TOKEN"      # or token_file = "...", or token = "..." (file is 0600)
    click_tracking = "off"
    dlt_entity_id = "1201159100000000000"
    rate_per_s = 100
    tracking_token = "..."            # the unguessable part of the delivery tracking URL
"""

from __future__ import annotations

import os
import secrets
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    model_validator,
)

from ics_sms.schemas.errors import describe

__all__ = [
    "ClickTracking",
    "Lane",
    "RetiredSender",
    "Sender",
    "SenderError",
    "SenderType",
    "Senders",
    "TokenSource",
    "load_senders",
    "new_tracking_token",
    "save_senders",
]


class SenderError(ValueError):
    """A senders file or a sender definition that cannot be used, with the reason."""


class Lane(StrEnum):
    """Queue lane of a send request: service traffic never waits behind promotional."""

    SERVICE = "service"
    PROMOTIONAL = "promotional"


class SenderType(StrEnum):
    SERVICE_IMPLICIT = "service_implicit"
    TRANSACTIONAL = "transactional"
    PROMOTIONAL = "promotional"

    @property
    def lane(self) -> Lane:
        return Lane.PROMOTIONAL if self is SenderType.PROMOTIONAL else Lane.SERVICE

    def check_header(self, sender_id: str) -> None:
        """Raise :class:`SenderError` when the DLT header does not fit this sender type."""
        if self is SenderType.PROMOTIONAL:
            if not (len(sender_id) == 6 and sender_id.isascii() and sender_id.isdigit()):
                raise SenderError(
                    f"sender_id {sender_id!r}: a promotional header is exactly 6 digits"
                )
        elif not (len(sender_id) == 6 and sender_id.isascii() and sender_id.isalpha()):
            raise SenderError(
                f"sender_id {sender_id!r}: a {self.value} header is exactly 6 letters"
            )


class ClickTracking(StrEnum):
    SELF = "self"
    ICS = "ics"
    OFF = "off"


class TokenSource(StrEnum):
    INLINE = "token"
    ENV = "token_env"
    FILE = "token_file"


SenderName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
]


def new_tracking_token() -> str:
    """An unguessable URL-safe token (128 bits)."""
    return secrets.token_urlsafe(16)


class Sender(BaseModel):
    """One ICS sender. ``token`` is a secret: it never appears in logs or output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: SenderName
    type: SenderType
    sender_id: Annotated[str, StringConstraints(min_length=6, max_length=6)]
    username: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    token: SecretStr | None = Field(default=None, exclude=True, min_length=1)
    token_env: Annotated[str, StringConstraints(min_length=1)] | None = None
    token_file: Path | None = None
    click_tracking: ClickTracking = ClickTracking.OFF
    dlt_entity_id: Annotated[str, StringConstraints(pattern=r"^\d{19}$")] | None = None
    rate_per_s: float = Field(default=100.0, gt=0, le=100_000)
    resend_uncertain: bool | None = Field(
        default=None,
        description="true: send again a message ICS may or may not have accepted (an OTP may "
                    "be worth a duplicate; a promotion never is). Absent: false.",
    )
    tracking_token: Annotated[
        str, StringConstraints(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    ] = Field(default_factory=new_tracking_token, repr=False)
    disabled: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="Set (to the reason) to stop sending for this sender without deleting it; "
                    "its receipts are still accepted.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self.type.check_header(self.sender_id)
        sources = [s for s in (self.token, self.token_env, self.token_file) if s is not None]
        if len(sources) != 1:
            raise ValueError("exactly one of token, token_env or token_file must be set")
        return self

    @property
    def lane(self) -> Lane:
        return self.type.lane

    @property
    def token_source(self) -> TokenSource:
        if self.token_env is not None:
            return TokenSource.ENV
        if self.token_file is not None:
            return TokenSource.FILE
        return TokenSource.INLINE

    def resolve_token(self, environ: Mapping[str, str] | None = None) -> SecretStr:
        """The ICS token, read from where the sender says it lives."""
        if self.token is not None:
            return self.token
        if self.token_env is not None:
            value = (os.environ if environ is None else environ).get(self.token_env)
            if not value:
                raise SenderError(
                    f"sender {self.name!r}: environment variable {self.token_env} is not set"
                )
            return SecretStr(value)
        assert self.token_file is not None
        try:
            return SecretStr(self.token_file.read_text().strip())
        except OSError as exc:
            raise SenderError(
                f"sender {self.name!r}: cannot read token file {self.token_file}: {exc.strerror}"
            ) from None

    def masked_token(self) -> str:
        match self.token_source:
            case TokenSource.ENV:
                return f"(from ${self.token_env})"
            case TokenSource.FILE:
                return f"(from file {self.token_file})"
        assert self.token is not None
        value = self.token.get_secret_value()
        return "****" + value[-2:] if len(value) >= 12 else "****"

    def tracking_path(self) -> str:
        """Path of this sender's delivery tracking URL on the receiver."""
        return f"/ics/{self.tracking_token}/receipts"

    def to_toml(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"name"}, exclude_none=True)
        if self.token is not None:
            data["token"] = self.token.get_secret_value()
        return data


class RetiredSender(BaseModel):
    """A removed sender whose tracking URL still accepts receipts until the grace period
    (``Settings.senders_grace_s``) after ``removed_at`` has passed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: SenderName
    tracking_token: str = Field(repr=False)
    removed_at: datetime


class Senders(BaseModel):
    """All configured senders and which one is the default."""

    model_config = ConfigDict(frozen=True)

    default: str | None = None
    senders: dict[str, Sender] = Field(default_factory=dict)
    retired: tuple[RetiredSender, ...] = ()
    """Removed senders, newest last: receipts on their tracking URLs are still accepted
    for a grace period."""

    @model_validator(mode="after")
    def _default_exists(self) -> Self:
        names = ", ".join(sorted(self.senders))
        if self.senders and self.default is None:
            raise ValueError(f"default: not set; name one of the senders ({names})")
        if self.senders and self.default not in self.senders:
            raise ValueError(f"default: sender {self.default!r} is not defined "
                             f"(senders: {names})")
        if not self.senders and self.default is not None:
            raise ValueError(f"default: sender {self.default!r} is named but no sender is "
                             "defined")
        tokens = [s.tracking_token for s in self.senders.values()]
        if len(set(tokens)) != len(tokens):
            raise ValueError("two senders share a tracking_token")
        return self

    def __iter__(self) -> Iterator[Sender]:  # type: ignore[override]
        return iter(self.senders.values())

    def __len__(self) -> int:
        return len(self.senders)

    def get(self, name: str | None) -> Sender | None:
        """The named sender, the default one when ``name`` is None, or None if unknown."""
        key = self.default if name is None else name
        return None if key is None else self.senders.get(key)

    def by_tracking_token(self, token: str) -> Sender | None:
        if not token.isascii():
            return None
        for sender in self.senders.values():
            if secrets.compare_digest(sender.tracking_token, token):
                return sender
        return None

    def add(self, sender: Sender) -> Senders:
        if sender.name in self.senders:
            raise SenderError(f"sender {sender.name!r} already exists")
        default = self.default if self.default is not None else sender.name
        return Senders(default=default, senders={**self.senders, sender.name: sender},
                       retired=self.retired)

    def replace(self, sender: Sender) -> Senders:
        self._require(sender.name)
        return Senders(default=self.default, senders={**self.senders, sender.name: sender},
                       retired=self.retired)

    def with_default(self, name: str) -> Senders:
        self._require(name)
        return Senders(default=name, senders=self.senders, retired=self.retired)

    def retired_by_tracking_token(self, token: str, now: datetime,
                                  grace_s: float) -> RetiredSender | None:
        """The removed sender whose tracking URL this is, while its grace period lasts."""
        if not token.isascii():
            return None
        for retired in reversed(self.retired):
            if secrets.compare_digest(retired.tracking_token, token):
                age = (now - retired.removed_at).total_seconds()
                return retired if age <= grace_s else None
        return None

    def remove(self, name: str, new_default: str | None = None, *,
               now: datetime | None = None) -> Senders:
        """Without the sender ``name``; its tracking URL is remembered as retired (at
        ``now``) so late receipts are still accepted for the grace period."""
        self._require(name)
        rest = {k: v for k, v in self.senders.items() if k != name}
        default = self.default
        if name == self.default:
            if new_default is None and rest:
                raise SenderError(
                    f"{name!r} is the default sender: name the new default with --new-default"
                )
            if new_default is not None and new_default not in rest:
                raise SenderError(f"new default {new_default!r} is not another existing sender")
            default = new_default
        gone = self.senders[name]
        retired = (*self.retired, RetiredSender(
            name=name, tracking_token=gone.tracking_token,
            removed_at=now or datetime.now(UTC)))
        return Senders(default=default, senders=rest, retired=retired)

    def named(self, name: str) -> Sender:
        """The sender called ``name``; :class:`SenderError` naming the known ones if none."""
        self._require(name)
        return self.senders[name]

    def _require(self, name: str) -> None:
        if name not in self.senders:
            known = ", ".join(sorted(self.senders)) or "none configured"
            raise SenderError(f"no sender named {name!r} (known: {known})")


def load_senders(path: Path) -> Senders:
    """Read the senders file; a missing file is an empty configuration."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Senders()
    except (OSError, UnicodeDecodeError) as exc:
        raise SenderError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SenderError(f"{path}: not valid TOML: {exc}") from None
    table = raw.get("senders", {})
    if not isinstance(table, dict):
        raise SenderError(f"{path}: [senders] must be a table")
    senders = {}
    for name, fields in table.items():
        if not isinstance(fields, dict):
            raise SenderError(f"{path}: [senders.{name}] must be a table")
        try:
            senders[name] = Sender.model_validate({**fields, "name": name})
        except ValidationError as exc:
            raise SenderError(f"{path}: senders.{name}: " + "; ".join(describe(exc))) from None
    try:
        return Senders(default=raw.get("default"), senders=senders)
    except ValidationError as exc:
        raise SenderError(f"{path}: " + "; ".join(describe(exc))) from None


def save_senders(path: Path, senders: Senders) -> None:
    """Write atomically (temp file + rename), owner-only when a secret is inline."""
    document: dict[str, Any] = {}
    if senders.default is not None:
        document["default"] = senders.default
    document["senders"] = {s.name: s.to_toml() for s in senders}
    data = tomli_w.dumps(document).encode()
    holds_secret = any(s.token is not None for s in senders)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600 if holds_secret else 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
