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
    # disabled = "reason"             # set: the workers send nothing for this sender

    [[retired]]                       # removed senders whose receipts are still accepted
    name = "old-otp"
    tracking_token = "..."
    removed_at = 2026-11-30T10:00:00Z

DLT rules (one implementation, used by the CLI, the registry and the workers):

- the header (``sender_id``) of a service or transactional sender is 6 ASCII letters, of a
  promotional sender 6 ASCII digits. DLT registers headers in upper case: lower-case
  letters are accepted and stored upper case, so ICS gets the header as registered;
- the DLT Principal Entity ID (``dlt_entity_id``) is 19 ASCII digits;
- a message to a +91 number needs a sender with a ``dlt_entity_id`` and a
  ``dlt_template_id`` (:func:`dlt_problem`).
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
from typing import Annotated, Any, NamedTuple, Self

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ics_sms.schemas.errors import describe
from ics_sms.schemas.messages import SendRequest

__all__ = [
    "DLT_ENTITY_ID_DIGITS",
    "HEADER_LENGTH",
    "INDIA",
    "ClickTracking",
    "DltProblem",
    "Lane",
    "RetiredSender",
    "Sender",
    "SenderError",
    "SenderType",
    "Senders",
    "TokenSource",
    "check_dlt_entity_id",
    "dlt_problem",
    "dump_senders",
    "load_senders",
    "new_tracking_token",
    "request_problems",
    "save_senders",
]

HEADER_LENGTH = 6
"""Length of a DLT header (``sender_id``)."""
DLT_ENTITY_ID_DIGITS = 19
"""Length of a DLT Principal Entity ID."""
INDIA = "+91"
"""Numbers under India's DLT rules."""


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

    def check_header(self, sender_id: str) -> str:
        """The DLT header as ICS must get it (letters in upper case); raises
        :class:`SenderError` saying why when it does not fit this sender type."""
        fits = len(sender_id) == HEADER_LENGTH and sender_id.isascii()
        if self is SenderType.PROMOTIONAL:
            if not (fits and sender_id.isdigit()):
                raise SenderError(f"{sender_id!r}: a promotional header is exactly "
                                  f"{HEADER_LENGTH} digits (DLT)")
            return sender_id
        if not (fits and sender_id.isalpha()):
            raise SenderError(f"{sender_id!r}: a {self.value} header is exactly "
                              f"{HEADER_LENGTH} letters A-Z (DLT)")
        return sender_id.upper()


def check_dlt_entity_id(value: str) -> str:
    """The DLT Principal Entity ID, or :class:`SenderError` saying why it is not one."""
    if not (len(value) == DLT_ENTITY_ID_DIGITS and value.isascii() and value.isdigit()):
        raise SenderError(f"{value!r}: a DLT entity id is exactly {DLT_ENTITY_ID_DIGITS} "
                          "digits")
    return value


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
    dlt_entity_id: str | None = None
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

    @field_validator("sender_id")
    @classmethod
    def _header_fits_type(cls, value: str, info: ValidationInfo) -> str:
        sender_type = info.data.get("type")
        return value if sender_type is None else sender_type.check_header(value)

    @field_validator("dlt_entity_id")
    @classmethod
    def _entity_id(cls, value: str | None) -> str | None:
        return None if value is None else check_dlt_entity_id(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
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

    def changed(self, **changes: Any) -> Sender:
        """This sender with ``changes`` applied and validated as a whole; the tracking token
        (pasted into the ICS portal) stays. A new token source replaces the old one."""
        fields: dict[str, Any] = {**self.model_dump(exclude={"token"}), "token": self.token}
        if {"token", "token_env", "token_file"} & changes.keys():
            fields.update(token=None, token_env=None, token_file=None)
        fields.update(changes)
        fields["tracking_token"] = self.tracking_token
        return Sender.model_validate(fields)

    def to_toml(self, *, include_secrets: bool = True) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"name"}, exclude_none=True)
        if self.token is not None and include_secrets:
            data["token"] = self.token.get_secret_value()
        return data


class DltProblem(NamedTuple):
    """Why India's DLT rules refuse a message: the request field at fault and a sentence."""

    field: str
    reason: str
    message: str


def dlt_problem(request: SendRequest, sender: Sender) -> DltProblem | None:
    """What DLT would refuse in sending ``request`` with ``sender`` (None: nothing). The
    workers reject such a message; ``ics-sms publish`` refuses the row."""
    if not request.to.startswith(INDIA):
        return None
    if sender.dlt_entity_id is None:
        return DltProblem("sender", f"{sender.name!r} has no DLT entity id, required for "
                                    f"{INDIA} numbers",
                          f"sender {sender.name!r} has no DLT entity id, required for "
                          f"{INDIA} numbers")
    if request.dlt_template_id is None:
        return DltProblem("dlt_template_id", f"required for {INDIA} numbers",
                          f"dlt_template_id is required for {INDIA} numbers")
    return None


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

    def disable(self, name: str, reason: str) -> Senders:
        """Sender ``name`` stopped (its receipts are still accepted), saying why."""
        return self.replace(self.named(name).changed(disabled=reason))

    def enable(self, name: str) -> Senders:
        return self.replace(self.named(name).changed(disabled=None))

    def in_grace(self, now: datetime, grace_s: float) -> tuple[RetiredSender, ...]:
        """The retired senders whose tracking URL still accepts receipts at ``now``."""
        return tuple(r for r in self.retired
                     if (now - r.removed_at).total_seconds() <= grace_s)

    def pruned(self, now: datetime, grace_s: float) -> Senders:
        """Without the retired senders whose grace period is over."""
        return Senders(default=self.default, senders=self.senders,
                       retired=self.in_grace(now, grace_s))

    def imported(self, other: Senders, now: datetime | None = None) -> Senders:
        """``other`` as the new configuration, keeping what must not be lost: a sender of
        both keeps its tracking token unless ``other`` gives one (the URL in the ICS
        portal stays), a sender missing from ``other`` is retired (its receipts are still
        accepted for the grace period), and every retired sender is kept."""
        when = now or datetime.now(UTC)
        senders = {}
        for sender in other:
            current = self.senders.get(sender.name)
            if current is not None and "tracking_token" not in sender.model_fields_set:
                sender = sender.model_copy(update={"tracking_token": current.tracking_token})
            senders[sender.name] = sender
        retired = list(self.retired)
        seen = {r.tracking_token for r in retired}
        for gone in other.retired:
            if gone.tracking_token not in seen:
                retired.append(gone)
                seen.add(gone.tracking_token)
        kept = {s.tracking_token for s in senders.values()}
        for sender in self:
            if sender.name not in other.senders and sender.tracking_token not in kept:
                retired.append(RetiredSender(name=sender.name,
                                             tracking_token=sender.tracking_token,
                                             removed_at=when))
        retired.sort(key=lambda r: r.removed_at)
        return Senders(default=other.default, senders=senders,
                       retired=tuple(r for r in retired if r.tracking_token not in kept))

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


def request_problems(request: SendRequest, senders: Senders) -> list[str]:
    """``field: reason`` for what the workers would refuse or hold in ``request``: an
    unknown sender (rejected), a disabled sender (not sent while it is disabled), India's
    DLT rules (rejected). Empty when the workers will send it."""
    sender = senders.get(request.sender)
    if sender is None:
        if request.sender is None:
            return ["sender: none named and no default sender is configured"]
        known = ", ".join(sorted(senders.senders)) or "none configured"
        return [f"sender: no sender named {request.sender!r} (known: {known})"]
    problems = []
    if sender.disabled is not None:
        problems.append(f"sender: {sender.name!r} is disabled ({sender.disabled}): the "
                        "workers do not send its messages while it is disabled")
    problem = dlt_problem(request, sender)
    if problem is not None:
        problems.append(f"{problem.field}: {problem.reason}")
    return problems


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
    retired = raw.get("retired", [])
    if not isinstance(retired, list):
        raise SenderError(f"{path}: retired must be an array of tables ([[retired]])")
    gone = []
    for number, fields in enumerate(retired, 1):
        try:
            gone.append(RetiredSender.model_validate(fields))
        except ValidationError as exc:
            raise SenderError(f"{path}: retired #{number}: "
                              + "; ".join(describe(exc))) from None
    try:
        return Senders(default=raw.get("default"), senders=senders, retired=tuple(gone))
    except ValidationError as exc:
        raise SenderError(f"{path}: " + "; ".join(describe(exc))) from None


def dump_senders(senders: Senders, *, include_secrets: bool = True) -> str:
    """The configuration as the TOML of a senders file; inline tokens only when
    ``include_secrets``."""
    document: dict[str, Any] = {}
    if senders.default is not None:
        document["default"] = senders.default
    document["senders"] = {s.name: s.to_toml(include_secrets=include_secrets)
                           for s in senders}
    if senders.retired:
        document["retired"] = [r.model_dump() for r in senders.retired]
    return tomli_w.dumps(document)


def save_senders(path: Path, senders: Senders, *, include_secrets: bool = True,
                 private: bool = False) -> None:
    """Write atomically (temp file + rename), owner-only when a secret is inline or
    ``private``; inline tokens are left out unless ``include_secrets``."""
    data = dump_senders(senders, include_secrets=include_secrets).encode()
    holds_secret = private or (include_secrets and any(s.token is not None for s in senders))
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
