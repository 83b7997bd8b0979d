"""Campaign files: CSV or JSON Lines of send requests, read as a stream of checked rows.

Formats (chosen by extension, ``.csv`` or ``.jsonl``/``.ndjson``, or given explicitly):

CSV
    UTF-8 (a byte-order mark is allowed), a header row, then one message per record.
    Columns are SendRequest fields: ``message_id``, ``campaign_id``, ``to``, ``text``,
    ``sender``, ``dlt_template_id``, ``expires_at`` (ISO 8601 with offset), plus
    ``metadata`` (a JSON object) and ``metadata.<key>`` columns (one string value each;
    they win over the same key in ``metadata``). An empty cell is a missing value. Any
    other column is an error: name it ``metadata.<name>`` to carry it along.
JSON Lines
    UTF-8, one SendRequest object per line; blank lines are skipped. A missing or null
    field is a missing value; an unknown field is an error (a typo must not go unnoticed).

Missing ``campaign_id``, ``sender``, ``text`` and ``dlt_template_id`` take the
:class:`CampaignDefaults`.

Rules beyond the message format (what the workers will refuse: an unknown or disabled
sender, India's DLT rules) are given as ``rules``, a function returning a request's
problems (``field: reason``); a row with any is invalid like a row that does not validate.

Message ids. A ``message_id`` given in the file is used as is; the same id on two rows of a
file is an error on every row after the first (``message_id: duplicate of line N``): two
messages with one id would share one smsgid and one set of event ids. A missing
``message_id`` is derived (:func:`derive_message_id`) from the campaign id, a digest of the
row's content once the defaults are applied (every field: recipient, text, sender,
template, expiry, metadata) and the line where the record starts:
``<campaign>-<digest>-<line>``. So:

- publishing the same file again (same options) gives the same ids, and the workers send
  each message once;
- two files, or two campaigns, never share an id for different messages: rows that differ
  in anything, or sit on different lines, get different ids (so different smsgids);
- editing a row in place changes that row's id only: it is a new message and is sent, the
  other rows are not sent again. Inserting or deleting rows moves the rows below to other
  lines and so gives them new ids: append new rows at the end (or give ``message_id``);
- to send the same file again on purpose, use a new campaign id.

Reading streams: a million-line file is never held in memory (only the message ids given
in the file are remembered, to find repeats). A row that does not validate
is yielded with its problems (``field: reason``); a file that cannot be read at all (missing,
not UTF-8, broken CSV, no usable header) raises :class:`CampaignFileError`.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from pydantic import ValidationError

from ics_sms.producers.errors import ProducerError
from ics_sms.schemas.errors import describe
from ics_sms.schemas.messages import SendRequest

__all__ = [
    "CampaignCheck",
    "CampaignDefaults",
    "CampaignFileError",
    "CampaignFormat",
    "Row",
    "Rules",
    "check_campaign",
    "derive_message_id",
    "detect_format",
    "read_campaign",
    "valid_requests",
]

_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9._:\-]+")
_MAX_ID = 64
_MAX_SLUG = 32
_DIGEST_BYTES = 8
_METADATA = "metadata"
_JSON_FIELDS = frozenset(SendRequest.model_fields)
_CSV_FIELDS = _JSON_FIELDS - {_METADATA, "schema_version"}
_METADATA_PREFIX = "metadata."


class CampaignFileError(ProducerError):
    """The file as a whole cannot be used; the message is one line naming file (and line)."""


class CampaignFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


_EXTENSIONS = {".csv": CampaignFormat.CSV, ".jsonl": CampaignFormat.JSONL,
               ".ndjson": CampaignFormat.JSONL}


@dataclass(frozen=True, slots=True)
class CampaignDefaults:
    """Values for rows that do not give them."""

    campaign_id: str | None = None
    sender: str | None = None
    text: str | None = None
    dlt_template_id: str | None = None

    def items(self) -> Iterator[tuple[str, str]]:
        for name in ("campaign_id", "sender", "text", "dlt_template_id"):
            value = getattr(self, name)
            if value is not None:
                yield name, value


@dataclass(frozen=True, slots=True)
class Row:
    """One record of a campaign file: a valid request, or the reasons it is not."""

    line: int
    request: SendRequest | None
    problems: tuple[str, ...] = ()

    def describe(self, path: Path | str) -> list[str]:
        """``FILE:LINE: field: reason`` for each problem."""
        return [f"{path}:{self.line}: {problem}" for problem in self.problems]


@dataclass
class CampaignCheck:
    """What a first pass over a file found.

    ``problems`` lists the problems of the first ``listed`` invalid rows only, so that a
    file of a million bad rows does not fill the memory or the screen.
    """

    rows: int = 0
    valid: int = 0
    invalid: int = 0
    listed: int = 0
    problems: list[str] = field(default_factory=list)
    senders: Counter[str | None] = field(default_factory=Counter)
    """Valid rows per sender name (None: the default sender)."""

    @property
    def unlisted(self) -> int:
        """Invalid rows whose problems are not in ``problems``."""
        return self.invalid - self.listed


def detect_format(path: Path, given: CampaignFormat | str | None = None) -> CampaignFormat:
    """The format given, else the one of the file extension."""
    if given is not None:
        return CampaignFormat(given)
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise CampaignFileError(
            f"{path}: cannot tell the format from the extension {path.suffix or '(none)'!r}: "
            "use .csv, .jsonl or .ndjson, or name the format"
        )
    return found


def derive_message_id(campaign_id: str, line: int, fields: Mapping[str, Any]) -> str:
    """The message id of the record at line ``line`` whose fields (defaults applied) are
    ``fields``: ``<slug>-<digest>-<line>``.

    ``slug`` is a readable, lower-case part of the campaign id (at most 32 characters);
    ``digest`` is 64 bits of BLAKE2b over the campaign id and every field, so a different
    campaign or a different row gives a different id, and the same row of the same file
    gives the same id on every run. Always a valid message id (letters, digits, ``._:-``,
    at most 64), lower case, so no two derived ids differ only in case.
    """
    content = b"%s\x1e%s" % (campaign_id.encode(), _canonical(fields))
    tail = f"{hashlib.blake2b(content, digest_size=_DIGEST_BYTES).hexdigest()}-{line}"
    slug = _slug(campaign_id, min(_MAX_SLUG, _MAX_ID - len(tail) - 1))
    return f"{slug}-{tail}" if slug else tail


@functools.lru_cache(maxsize=64)
def _slug(campaign_id: str, size: int) -> str:
    """A readable, lower-case part of the campaign id, at most ``size`` characters."""
    slug = _NOT_IDENTIFIER.sub("-", campaign_id.lower()).strip("-._:")
    return slug[:max(size, 0)].rstrip("-._:")


def _canonical(fields: Mapping[str, Any]) -> bytes:
    """The fields as bytes that are equal exactly when the fields are (``message_id`` aside)."""
    content = fields
    if "message_id" in fields:
        content = {key: value for key, value in fields.items() if key != "message_id"}
    try:
        return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # a value JSON cannot hold: the row fails validation
        return repr(sorted(content.items())).encode()


# -- reading -----------------------------------------------------------------------------
class _Lines:
    """Decoded lines of a binary file, counting them, with one-line errors."""

    def __init__(self, path: Path, handle: BinaryIO) -> None:
        self.path = path
        self._handle = handle
        self.number = 0

    def __iter__(self) -> Iterator[str]:
        for raw in self._handle:
            self.number += 1
            if self.number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CampaignFileError(
                    f"{self.path}:{self.number}: not UTF-8 text (byte {exc.start + 1} of the "
                    "line); save the file as UTF-8"
                ) from None


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise CampaignFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CampaignFileError(f"{path}: is a directory, not a campaign file") from None
    except OSError as exc:
        raise CampaignFileError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_campaign(path: Path, fmt: CampaignFormat | str | None = None,
                  defaults: CampaignDefaults | None = None, rules: Rules | None = None
                  ) -> Iterator[Row]:
    """Every record of the file as a :class:`Row`, streamed in file order; a request with
    problems under ``rules`` is an invalid row."""
    kind = detect_format(path, fmt)
    defaults = defaults or CampaignDefaults()
    with _open(path) as handle:
        lines = _Lines(path, handle)
        try:
            finish = _Finisher(defaults, rules)
            if kind is CampaignFormat.CSV:
                yield from _csv_rows(lines, defaults, finish)
            else:
                yield from _jsonl_rows(lines, finish)
        except OSError as exc:
            raise CampaignFileError(f"{path}: cannot read: {exc.strerror or exc}") from None


_Finish = Callable[[int, dict[str, Any]], Row]
Rules = Callable[[SendRequest], Sequence[str]]
"""Problems (``field: reason``) of a valid request that the workers would not send."""


class _Finisher:
    """Turns the fields of each record into a :class:`Row`: applies the defaults, derives a
    missing message id, refuses a given id already seen on an earlier line, validates."""

    __slots__ = ("_defaults", "_rules", "_seen")

    def __init__(self, defaults: CampaignDefaults, rules: Rules | None = None) -> None:
        self._defaults = tuple(defaults.items())
        self._rules = rules
        self._seen: dict[str, int] = {}
        """Line of each message id given in the file (derived ids are unique by line)."""

    def __repr__(self) -> str:
        return f"<_Finisher given_ids={len(self._seen)}>"

    def __call__(self, line: int, fields: dict[str, Any]) -> Row:
        for name, value in self._defaults:
            if fields.get(name) is None:
                fields[name] = value
        given = fields.get("message_id")
        problems: tuple[str, ...] = ()
        if isinstance(given, str):
            first = self._seen.setdefault(given, line)
            if first != line:
                problems = (f"message_id: duplicate of line {first}",)
        elif given is None:
            campaign_id = fields.get("campaign_id")
            if isinstance(campaign_id, str) and campaign_id:
                fields["message_id"] = derive_message_id(campaign_id, line, fields)
        try:
            request = SendRequest.model_validate(fields)
        except ValidationError as exc:
            return Row(line, None, (*problems, *describe(exc)))
        if self._rules is not None:
            problems = (*problems, *self._rules(request))
        return Row(line, None, problems) if problems else Row(line, request)


# -- JSON Lines --------------------------------------------------------------------------
def _jsonl_rows(lines: _Lines, finish: _Finish) -> Iterator[Row]:
    for text in lines:
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Row(lines.number, None, (f"not valid JSON: {exc.msg} (column {exc.colno})",))
            continue
        if not isinstance(value, dict):
            yield Row(lines.number, None,
                      (f"expected a JSON object, found {_json_kind(value)}",))
            continue
        unknown = sorted(set(value) - _JSON_FIELDS)
        if unknown:
            yield Row(lines.number, None, tuple(f"{key}: unknown field" for key in unknown))
            continue
        # a null field is a missing one (and derives the same id)
        yield finish(lines.number, {k: v for k, v in value.items() if v is not None})


def _json_kind(value: object) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


# -- CSV ---------------------------------------------------------------------------------
def _csv_rows(lines: _Lines, defaults: CampaignDefaults, finish: _Finish) -> Iterator[Row]:
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise CampaignFileError(f"{lines.path}: empty file: expected a header row")
        columns = _check_header(lines.path, [c.strip() for c in header], defaults)
        start = reader.line_num + 1
        for record in reader:
            if any(cell.strip() for cell in record):
                yield _csv_row(start, columns, record, finish)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise CampaignFileError(f"{lines.path}:{reader.line_num}: not valid CSV: {exc}") from None


def _check_header(path: Path, columns: list[str], defaults: CampaignDefaults) -> list[str]:
    duplicates = sorted({c for c in columns if c and columns.count(c) > 1})
    if duplicates:
        raise CampaignFileError(f"{path}: the header repeats column(s) {', '.join(duplicates)}")
    unknown = [c for c in columns if c and c not in _CSV_FIELDS and c != _METADATA
               and not (c.startswith(_METADATA_PREFIX) and len(c) > len(_METADATA_PREFIX))]
    if unknown:
        raise CampaignFileError(
            f"{path}: unknown column(s) {', '.join(repr(c) for c in unknown)} in the header; "
            f"known: {', '.join(sorted(_CSV_FIELDS))}, metadata, metadata.<key>"
        )
    given = dict(defaults.items())
    missing = [c for c in ("to", "text", "campaign_id") if c not in columns and c not in given]
    if missing:
        raise CampaignFileError(
            f"{path}: the header has no column(s) {', '.join(missing)}"
            + (" (and no default was given)" if set(missing) - {"to"} else "")
        )
    return columns


def _csv_row(line: int, columns: list[str], record: list[str], finish: _Finish) -> Row:
    if len(record) != len(columns):
        return Row(line, None, (f"{len(record)} fields where the header has {len(columns)}",))
    fields: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for column, cell in zip(columns, record, strict=True):
        if cell == "":
            continue
        if not column:
            return Row(line, None, (f"a value ({cell[:20]!r}) in a column without a name",))
        if column == _METADATA:
            try:
                value = json.loads(cell)
            except json.JSONDecodeError as exc:
                return Row(line, None, (f"metadata: not valid JSON: {exc.msg}",))
            if not isinstance(value, dict):
                return Row(line, None, ("metadata: must be a JSON object",))
            metadata = {**value, **metadata}
        elif column.startswith(_METADATA_PREFIX):
            metadata[column.removeprefix(_METADATA_PREFIX)] = cell
        else:
            fields[column] = cell
    if metadata:
        fields[_METADATA] = metadata
    return finish(line, fields)


# -- passes ------------------------------------------------------------------------------
def check_campaign(path: Path, fmt: CampaignFormat | str | None = None,
                   defaults: CampaignDefaults | None = None, *,
                   max_rows_listed: int = 20, rules: Rules | None = None) -> CampaignCheck:
    """A first streaming pass: counts, the first problems, valid rows per sender."""
    check = CampaignCheck()
    for row in read_campaign(path, fmt, defaults, rules):
        check.rows += 1
        if row.request is None:
            check.invalid += 1
            if check.listed < max_rows_listed:
                check.listed += 1
                check.problems.extend(row.describe(path))
        else:
            check.valid += 1
            check.senders[row.request.sender] += 1
    return check


def valid_requests(rows: Iterable[Row]) -> Iterator[SendRequest]:
    """The requests of the valid rows, in order."""
    for row in rows:
        if row.request is not None:
            yield row.request
