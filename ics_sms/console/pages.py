"""Login, campaigns, messages and health pages (the senders pages are in senders_pages)."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from ics_sms.console.health import collect_health
from ics_sms.console.security import COOKIE, redirect, session_of
from ics_sms.console.shared import CONSOLE, render
from ics_sms.console.users import check_login
from ics_sms.schemas.phone import InvalidNumber, normalize_e164
from ics_sms.stores.history import COUNTED_STATES, failure_meaning
from ics_sms.stores.redis import StoreError

__all__ = ["add_routes"]

_LOOKUP_LIMIT = 50


async def index(_request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/senders")


async def login_form(request: web.Request) -> web.Response:
    if session_of(request).user is not None:
        raise web.HTTPSeeOther("/senders")
    return render(request, "login.html", {"error": "", "name": ""})


async def login(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    form = await request.post()
    name = str(form.get("name", "")).strip().lower()
    password = str(form.get("password", ""))
    keys = (f"address:{request.remote}", f"account:{name}")
    wait_s = console.limiter.retry_after_s(*keys)
    if wait_s > 0:
        return render(request, "login.html", {
            "error": f"too many failed logins: try again in {int(wait_s) + 1} s",
            "name": name}, status=429)
    stored = await console.blocking(lambda: console.users.get(name)) if name else None
    user = await console.blocking(lambda: check_login(stored, password))
    if user is None:
        console.limiter.failed(*keys)
        return render(request, "login.html", {"error": "wrong name or password",
                                              "name": name}, status=401)
    console.limiter.succeeded(*keys)
    console.sessions.drop(request.cookies.get(COOKIE))
    sid, session = console.sessions.new()  # a new id at login: no session fixation
    session.user, session.role = user.name, user.role
    response = redirect("/senders")
    console.sessions.set_cookie(response, sid)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    request.app[CONSOLE].sessions.drop(request.cookies.get(COOKIE))
    response = redirect("/login")
    response.del_cookie(COOKIE, path="/")
    return response


def _refresh(request: web.Request) -> int:
    return 0 if request.query.get("refresh") == "0" else 5


async def campaigns(request: web.Request) -> web.Response:
    store = request.app[CONSOLE].messages
    try:
        found, problem = await store.campaigns(50), ""
    except StoreError as exc:
        found, problem = [], str(exc)
    return render(request, "campaigns.html", {"campaigns": found, "problem": problem,
                                              "refresh": _refresh(request)})


async def campaign(request: web.Request) -> web.Response:
    campaign_id = request.match_info["campaign_id"]
    counts = await request.app[CONSOLE].messages.campaign(campaign_id)
    if counts is None:
        raise web.HTTPNotFound(text=f"no campaign {campaign_id!r} is known")
    codes = sorted(counts.failure_codes.items(), key=lambda kv: -kv[1])
    return render(request, "campaign.html", {
        "c": counts, "states": COUNTED_STATES, "refresh": _refresh(request),
        "codes": [(code, n, failure_meaning(code)) for code, n in codes]})


async def messages(request: web.Request) -> web.StreamResponse:
    query = request.query.get("q", "").strip()
    store = request.app[CONSOLE].messages
    found, error = [], ""
    if query:
        try:
            phone = normalize_e164(query) if query[:1] in "+0123456789" else None
        except InvalidNumber:
            phone = None
        view = await store.message(query)
        if view is not None:
            raise web.HTTPSeeOther(f"/messages/{quote(view.message_id, safe='')}")
        if phone is not None:
            found = await store.find(phone, limit=_LOOKUP_LIMIT)
        if not found:
            error = f"no message with id or phone number {query!r}"
    return render(request, "messages.html", {"q": query, "found": found, "error": error})


async def message(request: web.Request) -> web.Response:
    message_id = request.match_info["message_id"]
    view = await request.app[CONSOLE].messages.message(message_id)
    if view is None:
        raise web.HTTPNotFound(text=f"no message {message_id!r} is known")
    meaning = failure_meaning(view.final["error_code"]) if view.final.get("error_code") else ""
    return render(request, "message.html", {"m": view, "meaning": meaning})


async def health(request: web.Request) -> web.Response:
    facts = await collect_health(request.app[CONSOLE].settings)
    return render(request, "health.html", {"h": facts, "refresh": _refresh(request)})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/campaigns", campaigns)
    app.router.add_get("/campaigns/{campaign_id:.+}", campaign)
    app.router.add_get("/messages", messages)
    app.router.add_get("/messages/{message_id:.+}", message)
    app.router.add_get("/health", health)
