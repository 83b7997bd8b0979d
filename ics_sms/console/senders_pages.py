"""The senders screen: list, add, edit, default, disable, delete, test SMS, history.

Every change goes the way ``ics-sms senders`` goes: load the whole configuration with its
version, change it with the pure :class:`~ics_sms.schemas.senders.Senders` methods (the
same validation, the same reason texts), save it against that version with the operator
as the actor (the registry's audit trail), and the running workers pick it up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import SecretStr, ValidationError

from ics_sms.console.security import require_admin, session_of
from ics_sms.console.shared import CONSOLE, Console, render
from ics_sms.schemas.errors import describe
from ics_sms.schemas.redact import SECRETS, known_secrets
from ics_sms.schemas.senders import (
    ClickTracking,
    Sender,
    SenderError,
    Senders,
    SenderType,
)
from ics_sms.stores.senders import SenderConflict, Snapshot
from ics_sms.workers.trial import TrialRefused, prepare, send

__all__ = ["add_routes"]

FIELDS = ("name", "type", "sender_id", "username", "token", "token_env", "click_tracking",
          "dlt_entity_id", "rate_per_s", "resend_uncertain")
TYPE_LABELS = {SenderType.SERVICE_IMPLICIT: "Service Implicit",
               SenderType.TRANSACTIONAL: "Transactional",
               SenderType.PROMOTIONAL: "Promotional"}
CLICK_LABELS = {ClickTracking.OFF: "Off: links are sent as written",
                ClickTracking.SELF: "By this platform (our short links, click events)",
                ClickTracking.ICS: "By ICS (ICS shortens and tracks)"}
_TOKEN_FIELDS = ("token", "token_env", "token_file")


class FormErrors(dict[str, list[str]]):
    """Field name -> reasons; ``""`` holds reasons about the whole form."""

    def add(self, field: str, reason: str) -> None:
        self.setdefault(field if field in FIELDS else "", []).append(reason)


def _errors_of(exc: ValidationError) -> FormErrors:
    errors = FormErrors()
    for line in describe(exc):
        field, sep, reason = line.partition(": ")
        if not sep or " " in field:
            field, reason = "", line
        if "exactly one of token" in reason:
            field, reason = "token", "give the ICS token (or the environment variable " \
                                     "holding it)"
        errors.add(field, reason)
    return errors


def _usable(sender: Sender) -> tuple[bool, str]:
    """Whether the workers can send for ``sender`` now, and why not."""
    if sender.disabled is not None:
        return False, f"disabled: {sender.disabled}"
    try:
        sender.resolve_token()
    except SenderError as exc:
        return False, str(exc)
    if sender.dlt_entity_id is None:
        return True, "usable, but +91 messages are rejected: no DLT entity id"
    return True, "usable"


def _actor(request: web.Request) -> str:
    return f"{session_of(request).user}@console"


async def _snapshot(console: Console) -> Snapshot:
    snapshot: Snapshot = await console.blocking(console.senders.load)
    SECRETS.add(*known_secrets(console.settings, snapshot.senders))
    return snapshot


async def _save(request: web.Request, snapshot: Snapshot, senders: Senders,
                action: str) -> None:
    console = request.app[CONSOLE]
    actor = _actor(request)
    await console.blocking(lambda: console.senders.save(
        senders, expected=snapshot.version, actor=actor, action=action))
    SECRETS.add(*known_secrets(None, senders))


def _flash(request: web.Request, note: str) -> None:
    session_of(request).flash.append(note)


def _tracking_url(console: Console, sender: Sender) -> str:
    return console.settings.tracking_url(sender.tracking_path())


# -- list and show --------------------------------------------------------------------------
async def list_senders(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    snapshot = await _snapshot(console)
    senders = snapshot.senders
    now = datetime.now(UTC)
    grace = console.settings.senders_grace_s
    rows = [(s, *_usable(s)) for s in senders]
    retired = [(r, r.removed_at + timedelta(seconds=grace)) for r in senders.in_grace(now, grace)]
    history = await console.blocking(lambda: console.senders.history(20))
    flash, session_of(request).flash[:] = list(session_of(request).flash), []
    return render(request, "senders.html", {
        "rows": rows, "default": senders.default, "retired": retired, "history": history,
        "where": console.senders.description, "types": TYPE_LABELS, "flash": flash})


async def show_sender(request: web.Request,
                      test: Mapping[str, Any] | None = None, status: int = 200) -> web.Response:
    console = request.app[CONSOLE]
    senders = (await _snapshot(console)).senders
    name = request.match_info["name"]
    sender = senders.get(name)
    if sender is None:
        raise web.HTTPNotFound(text=f"no sender named {name!r}")
    usable, why = _usable(sender)
    flash, session_of(request).flash[:] = list(session_of(request).flash), []
    return render(request, "sender.html", {
        "s": sender, "default": senders.default == name, "usable": usable, "why": why,
        "tracking_url": _tracking_url(console, sender), "types": TYPE_LABELS,
        "clicks": CLICK_LABELS, "masked": sender.masked_token(), "flash": flash,
        "others": [n for n in senders.senders if n != name],
        "test": test or {"to": "", "text": "", "dlt_template_id": "", "errors": FormErrors(),
                         "answer": None}}, status=status)


# -- add and edit ---------------------------------------------------------------------------
def _form_fields(form: Mapping[str, Any]) -> dict[str, Any]:
    def text(key: str) -> str:
        return str(form.get(key, "")).strip()

    resend = text("resend_uncertain")
    return {
        "name": text("name"), "type": text("type"), "sender_id": text("sender_id"),
        "username": text("username"), "click_tracking": text("click_tracking") or "off",
        "dlt_entity_id": text("dlt_entity_id") or None,
        "rate_per_s": text("rate_per_s") or "100",
        "resend_uncertain": {"yes": True, "no": False}.get(resend),
    }


def _tokens(form: Mapping[str, Any]) -> dict[str, Any]:
    """The token fields given (write-only: an empty field keeps what is stored)."""
    token = str(form.get("token", "")).strip()
    env = str(form.get("token_env", "")).strip()
    if token:
        return {"token": SecretStr(token)}
    if env:
        return {"token_env": env}
    return {}


def _form_page(request: web.Request, values: Mapping[str, Any], errors: FormErrors, *,
               editing: str | None, status: int = 200) -> web.Response:
    shown = {k: "" for k in (*FIELDS, "token_note")}
    shown.update({k: ("" if v is None else v) for k, v in values.items() if k != "token"})
    return render(request, "sender_form.html", {
        "v": shown, "errors": errors, "editing": editing, "types": TYPE_LABELS,
        "clicks": CLICK_LABELS}, status=status)


def _shown(values: Mapping[str, Any], form: Mapping[str, Any]) -> dict[str, Any]:
    """The values to show again in a refused form (never the token)."""
    return {**values, "token_env": str(form.get("token_env", "")).strip()}


async def new_form(request: web.Request) -> web.Response:
    require_admin(request)
    return _form_page(request, {"type": "service_implicit", "click_tracking": "off",
                                "rate_per_s": "100", "resend_uncertain": ""}, FormErrors(),
                      editing=None)


async def _guarded_save(request: web.Request, values: Mapping[str, Any], editing: str | None,
                        change: Callable[[Senders], tuple[Senders, str, str]]) -> web.Response:
    """Apply ``change`` to the current senders and save; the form again, with the reasons
    next to the fields, when the validation or the save refuses."""
    console = request.app[CONSOLE]
    snapshot = await _snapshot(console)
    try:
        updated, action, note = change(snapshot.senders)
        await _save(request, snapshot, updated, action)
        _flash(request, note)
    except ValidationError as exc:
        return _form_page(request, values, _errors_of(exc), editing=editing, status=422)
    except SenderConflict as exc:
        errors = FormErrors()
        errors.add("", f"{exc}: someone else saved meanwhile; check and submit again")
        return _form_page(request, values, errors, editing=editing, status=409)
    except SenderError as exc:
        errors = FormErrors()
        errors.add("name" if "already exists" in str(exc) else "", str(exc))
        return _form_page(request, values, errors, editing=editing, status=422)
    raise web.HTTPSeeOther(f"/senders/{values['name']}")


async def create(request: web.Request) -> web.Response:
    require_admin(request)
    form = await request.post()
    values = _form_fields(form)

    def change(senders: Senders) -> tuple[Senders, str, str]:
        sender = Sender.model_validate({**values, **_tokens(form)})
        updated = senders.add(sender)
        default = " (the default sender)" if updated.default == sender.name else ""
        return (updated, f"senders add {sender.name}",
                f"added sender {sender.name}{default}: paste its delivery tracking URL into "
                "the ICS portal")

    return await _guarded_save(request, _shown(values, form), None, change)


async def edit_form(request: web.Request) -> web.Response:
    require_admin(request)
    senders = (await _snapshot(request.app[CONSOLE])).senders
    name = request.match_info["name"]
    sender = senders.get(name)
    if sender is None:
        raise web.HTTPNotFound(text=f"no sender named {name!r}")
    values = sender.model_dump(mode="json", exclude={"token", "tracking_token"})
    values["resend_uncertain"] = {None: "", True: "yes", False: "no"}[sender.resend_uncertain]
    values["token_note"] = sender.masked_token()
    return _form_page(request, values, FormErrors(), editing=name)


async def update(request: web.Request) -> web.Response:
    require_admin(request)
    name = request.match_info["name"]
    form = await request.post()
    values = {**_form_fields(form), "name": name}

    def change(senders: Senders) -> tuple[Senders, str, str]:
        current = senders.named(name)
        tokens = _tokens(form)
        if tokens == {"token_env": current.token_env}:
            tokens = {}  # the variable shown in the form, unchanged
        changes = {k: v for k, v in values.items() if k != "name"} | tokens
        updated = current.changed(**changes)
        changed = sorted({"token" if k in _TOKEN_FIELDS else k for k, v in changes.items()
                          if k in _TOKEN_FIELDS or getattr(current, k) != getattr(updated, k)})
        return (senders.replace(updated), f"senders set {name}: " + ", ".join(changed),
                f"updated sender {name}: {', '.join(changed) or 'nothing changed'}")

    return await _guarded_save(request, _shown(values, form), name, change)


# -- default, disable, enable, delete -------------------------------------------------------
async def _act(request: web.Request, change: Callable[[Senders], Senders], action: str,
               note: str) -> web.Response:
    require_admin(request)
    name = request.match_info["name"]
    snapshot = await _snapshot(request.app[CONSOLE])
    try:
        await _save(request, snapshot, change(snapshot.senders), action)
        _flash(request, note)
    except (SenderError, ValidationError) as exc:
        reason = "; ".join(describe(exc)) if isinstance(exc, ValidationError) else str(exc)
        _flash(request, f"not done: {reason}")
    raise web.HTTPSeeOther(f"/senders/{name}" if name in (await _snapshot(
        request.app[CONSOLE])).senders.senders else "/senders")


async def make_default(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return await _act(request, lambda s: s.with_default(name), f"senders default {name}",
                      f"default sender is now {name}")


async def disable(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    reason = str((await request.post()).get("reason", "")).strip()
    return await _act(request, lambda s: s.disable(name, reason), f"senders disable {name}",
                      f"disabled sender {name}: the workers send none of its messages until "
                      "it is enabled")


async def enable(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return await _act(request, lambda s: s.enable(name), f"senders enable {name}",
                      f"enabled sender {name}")


async def delete_form(request: web.Request) -> web.Response:
    require_admin(request)
    console = request.app[CONSOLE]
    senders = (await _snapshot(console)).senders
    name = request.match_info["name"]
    if name not in senders.senders:
        raise web.HTTPNotFound(text=f"no sender named {name!r}")
    until = datetime.now(UTC) + timedelta(seconds=console.settings.senders_grace_s)
    return render(request, "sender_delete.html", {
        "name": name, "default": senders.default == name, "until": until,
        "others": [n for n in senders.senders if n != name]})


async def delete(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    new_default = str((await request.post()).get("new_default", "")).strip() or None
    console = request.app[CONSOLE]
    now = datetime.now(UTC)
    grace = console.settings.senders_grace_s
    return await _act(request, lambda s: s.remove(name, new_default, now=now).pruned(now, grace),
                      f"senders remove {name}",
                      f"removed sender {name}; its tracking URL accepts receipts until "
                      f"{(now + timedelta(seconds=grace)):%Y-%m-%d %H:%M UTC}")


# -- test SMS -------------------------------------------------------------------------------
async def send_test(request: web.Request) -> web.Response:
    """Send one SMS the way ``ics-sms senders test`` does and show what ICS answered."""
    require_admin(request)
    console = request.app[CONSOLE]
    form = await request.post()
    name = request.match_info["name"]
    values = {k: str(form.get(k, "")).strip() for k in ("to", "text", "dlt_template_id")}
    errors = FormErrors()
    answer: dict[str, Any] | None = None
    sender = (await _snapshot(console)).senders.get(name)
    if sender is None:
        raise web.HTTPNotFound(text=f"no sender named {name!r}")
    try:
        answer = await _test(console, sender, values, form.get("outside_window") == "yes")
    except TrialRefused as exc:
        if exc.field in values:
            errors.setdefault(exc.field, []).append(exc.reason)
        else:
            errors.setdefault("", []).append(str(exc))
    except SenderError as exc:
        errors.setdefault("", []).append(str(exc))
    return await show_sender(request, {**values, "errors": errors, "answer": answer},
                             status=200 if not errors else 422)


async def _test(console: Console, sender: Sender, values: Mapping[str, str],
                outside_window: bool) -> dict[str, Any]:
    trial = prepare(console.settings, sender, to=values["to"], text=values["text"],
                    dlt_template_id=values["dlt_template_id"] or None, now=datetime.now(UTC),
                    outside_window=outside_window)
    sent = await send(console.settings, trial)
    return {"message_id": trial.request.message_id, "segments": trial.info.segments,
            "encoding": trial.info.encoding.value,
            "latency_ms": round(sent.result.latency_s * 1000),
            "unremembered": sent.unremembered or "", "warning": trial.warning or "",
            "ok": sent.accepted, "said": sent.said()}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/senders", list_senders)
    app.router.add_get("/senders/new", new_form)
    app.router.add_post("/senders/new", create)
    app.router.add_get("/senders/{name}", show_sender)
    app.router.add_get("/senders/{name}/edit", edit_form)
    app.router.add_post("/senders/{name}/edit", update)
    app.router.add_post("/senders/{name}/default", make_default)
    app.router.add_post("/senders/{name}/disable", disable)
    app.router.add_post("/senders/{name}/enable", enable)
    app.router.add_get("/senders/{name}/delete", delete_form)
    app.router.add_post("/senders/{name}/delete", delete)
    app.router.add_post("/senders/{name}/test", send_test)
