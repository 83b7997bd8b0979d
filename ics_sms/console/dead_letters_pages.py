"""The dead letters page: counts by reason, the list, replay and purge.

Everything goes through :mod:`ics_sms.workers.dead_letters`, the library behind
``ics-sms dead-letters``: the same selection, the same replay (at most once, only what ICS
certainly never got), the same purge. The list masks phone numbers and shows no text.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ics_sms.console.security import redirect, require_admin, session_of
from ics_sms.console.shared import CONSOLE, render
from ics_sms.workers.dead_letters import (
    DeadLetterError,
    Selection,
    age_text,
    collect,
    counts_by_reason,
    purge,
    replay,
)

__all__ = ["add_routes"]

_SHOWN = 200
"""Dead letters listed at most (the counts cover all)."""


def _selection(values: Any) -> Selection:
    ids = frozenset(str(v) for v in values.getall("id", []) if str(v).strip())
    reason = str(values.get("reason", "")).strip()
    return Selection(ids=ids, reasons=frozenset({reason}) if reason else frozenset())


async def dead_letters(request: web.Request) -> web.Response:
    settings = request.app[CONSOLE].settings
    reason = request.query.get("reason", "").strip()
    now = time.time()
    session = session_of(request)
    flash, session.flash[:] = list(session.flash), []
    try:
        letters = await collect(settings, Selection())
        problem = ""
    except DeadLetterError as exc:
        letters, problem = [], str(exc)
    shown = [letter for letter in letters if not reason or letter.reason == reason]
    rows = [{**letter.summary(now), "age": age_text(letter.age_s(now)),
             "error": letter.error[:160]} for letter in shown[:_SHOWN]]
    return render(request, "dead_letters.html", {
        "counts": counts_by_reason(letters), "total": len(letters), "rows": rows,
        "more": max(len(shown) - _SHOWN, 0), "reason": reason, "problem": problem,
        "flash": flash, "queue": settings.topology.dead_queue})


async def replay_letters(request: web.Request) -> web.Response:
    require_admin(request)
    selection = _selection(await request.post())
    if selection.everything:
        session_of(request).flash.append("choose dead letters (or a reason) to replay")
        return redirect("/dead-letters")
    try:
        report = await replay(request.app[CONSOLE].settings, selection)
    except DeadLetterError as exc:
        session_of(request).flash.append(f"replay failed: {exc}")
        return redirect("/dead-letters")
    notes = session_of(request).flash
    notes.append(f"replayed {len(report.replayed)}, kept {len(report.skipped)}")
    notes.extend(f"kept {s.message_id}: {s.why}" for s in report.skipped[:20])
    return redirect("/dead-letters")


async def purge_form(request: web.Request) -> web.Response:
    require_admin(request)
    reason = request.query.get("reason", "").strip()
    letters = await collect(request.app[CONSOLE].settings, Selection(
        reasons=frozenset({reason}) if reason else frozenset()))
    return render(request, "dead_letters_purge.html", {"reason": reason, "count": len(letters)})


async def purge_letters(request: web.Request) -> web.Response:
    require_admin(request)
    form = await request.post()
    if form.get("confirm") != "yes":
        raise web.HTTPBadRequest(text="purge needs the confirmation")
    selection = _selection(form)
    try:
        purged = await purge(request.app[CONSOLE].settings, selection)
    except DeadLetterError as exc:
        session_of(request).flash.append(f"purge failed: {exc}")
        return redirect("/dead-letters")
    total = sum(purged.values())
    detail = ", ".join(f"{reason} {n}" for reason, n in purged.most_common())
    session_of(request).flash.append(f"purged {total} dead letter(s){': ' if detail else ''}"
                                     f"{detail}")
    return redirect("/dead-letters")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/dead-letters", dead_letters)
    app.router.add_post("/dead-letters/replay", replay_letters)
    app.router.add_get("/dead-letters/purge", purge_form)
    app.router.add_post("/dead-letters/purge", purge_letters)
