"""The console's pages through HTTP: login, CSRF, headers, senders forms, roles."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from markupsafe import escape
from pydantic import ValidationError

from ics_sms.console.app import create_console_app
from ics_sms.console.users import FileUserStore
from ics_sms.schemas.errors import describe
from ics_sms.schemas.senders import Sender
from ics_sms.schemas.settings import Settings
from ics_sms.stores.messages import InMemoryMessageStore
from ics_sms.stores.senders import MemorySenderSource
from tests.console.conftest import PASSWORD, Console, csrf_of

GOOD = {"name": "acme-otp", "type": "service_implicit", "sender_id": "acmein",
        "username": "acme", "token": "s3cret-ics-token-value", "click_tracking": "off",
        "dlt_entity_id": "1201159100000000000", "rate_per_s": "100"}


async def test_a_logged_out_page_sends_to_the_login(console: Console) -> None:
    response = await console.client.get("/senders", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/login"


async def test_a_logged_out_post_is_refused_even_with_the_sessions_csrf(console: Console) -> None:
    token = csrf_of(await (await console.client.get("/login")).text())
    response = await console.client.post("/senders/new", data={**GOOD, "csrf": token})
    assert response.status == 403
    assert "log in" in await response.text()
    assert not len(console.source.load().senders)


async def test_a_post_without_the_csrf_token_is_refused(console: Console) -> None:
    await console.login()
    response = await console.client.post("/senders/new", data=GOOD)
    assert response.status == 403
    assert "CSRF" in await response.text()
    response = await console.client.post("/senders/new", data={**GOOD, "csrf": "forged"})
    assert response.status == 403
    assert not len(console.source.load().senders)


async def test_every_answer_carries_the_security_headers(console: Console) -> None:
    response = await console.client.get("/login")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # ICS_SMS_CONSOLE_SECURE_COOKIE is off here


async def test_a_wrong_password_is_refused_and_repeated_failures_are_rate_limited(
        console: Console) -> None:
    statuses = []
    for _ in range(6):
        page = await (await console.client.get("/login")).text()
        response = await console.client.post("/login", data={
            "name": "ada", "password": "not the password", "csrf": csrf_of(page)})
        statuses.append(response.status)
    assert statuses == [401] * 5 + [429]
    page = await (await console.client.get("/login")).text()
    response = await console.client.post("/login", data={
        "name": "ada", "password": PASSWORD, "csrf": csrf_of(page)}, allow_redirects=False)
    assert response.status == 429  # even the right password waits


async def test_login_gives_a_new_session_id(console: Console) -> None:
    await console.client.get("/login")
    before = console.client.session.cookie_jar.filter_cookies(console.client.make_url("/"))
    await console.login()
    after = console.client.session.cookie_jar.filter_cookies(console.client.make_url("/"))
    assert before["ics_console"].value != after["ics_console"].value


async def test_a_bad_sender_id_is_refused_next_to_its_field_with_the_cli_reason(
        console: Console) -> None:
    csrf = await console.login()
    response = await console.client.post("/senders/new", data={
        **GOOD, "sender_id": "ACME12", "csrf": csrf})
    assert response.status == 422
    html = await response.text()
    with pytest.raises(ValidationError) as refused:  # what `ics-sms senders add` says
        Sender.model_validate({**GOOD, "sender_id": "ACME12"})
    (line,) = describe(refused.value)
    assert line.startswith("sender_id: ")
    reason = escape(line.removeprefix("sender_id: "))
    assert f'<p class="field-error" id="sender_id-error">{reason}</p>' in html
    assert 'id="sender_id" name="sender_id" value="ACME12"' in html
    assert "s3cret-ics-token-value" not in html  # the token is never rendered back
    assert not len(console.source.load().senders)


async def test_an_added_sender_is_saved_default_and_its_token_never_shown(
        console: Console) -> None:
    csrf = await console.login()
    response = await console.client.post("/senders/new", data={**GOOD, "csrf": csrf})
    html = await response.text()
    assert response.status == 200
    senders = console.source.load().senders
    sender = senders.named("acme-otp")
    assert senders.default == "acme-otp"
    assert sender.sender_id == "ACMEIN"
    assert "s3cret-ics-token-value" not in html
    assert sender.tracking_path() in html
    edit = await (await console.client.get("/senders/acme-otp/edit")).text()
    assert "s3cret-ics-token-value" not in edit


async def test_an_edit_without_a_token_keeps_the_stored_one(console: Console) -> None:
    csrf = await console.login()
    await console.client.post("/senders/new", data={**GOOD, "csrf": csrf})
    tracking = console.source.load().senders.named("acme-otp").tracking_token
    response = await console.client.post("/senders/acme-otp/edit", data={
        **GOOD, "token": "", "rate_per_s": "25", "csrf": csrf})
    assert response.status == 200
    sender = console.source.load().senders.named("acme-otp")
    assert sender.rate_per_s == 25
    assert sender.resolve_token().get_secret_value() == "s3cret-ics-token-value"
    assert sender.tracking_token == tracking


async def test_default_disable_and_delete_with_confirmation(console: Console) -> None:
    csrf = await console.login()
    await console.client.post("/senders/new", data={**GOOD, "csrf": csrf})
    await console.client.post("/senders/new", data={
        **GOOD, "name": "acme-promo", "type": "promotional", "sender_id": "512345",
        "csrf": csrf})
    await console.client.post("/senders/acme-promo/default", data={"csrf": csrf})
    assert console.source.load().senders.default == "acme-promo"
    await console.client.post("/senders/acme-otp/disable", data={"csrf": csrf,
                                                                 "reason": "DLT renewal"})
    assert console.source.load().senders.named("acme-otp").disabled == "DLT renewal"
    page = await (await console.client.get("/senders")).text()
    assert "disabled: DLT renewal" in page
    confirm = await (await console.client.get("/senders/acme-promo/delete")).text()
    assert "is the default sender" in confirm
    await console.client.post("/senders/acme-promo/delete", data={
        "csrf": csrf, "new_default": "acme-otp"})
    senders = console.source.load().senders
    assert list(senders.senders) == ["acme-otp"]
    assert senders.default == "acme-otp"


async def test_a_viewer_looks_but_cannot_change_senders(console: Console) -> None:
    csrf = await console.login("vic")
    page = await (await console.client.get("/senders")).text()
    assert "Add a sender" not in page
    response = await console.client.post("/senders/new", data={**GOOD, "csrf": csrf})
    assert response.status == 403
    assert (await console.client.get("/senders/new")).status == 403
    assert not len(console.source.load().senders)


async def test_a_message_lookup_of_an_unknown_id_says_so(console: Console) -> None:
    await console.login()
    page = await (await console.client.get("/messages", params={"q": "nope"})).text()
    assert "no message with id or phone number" in page


async def test_health_on_the_embedded_broker_says_what_it_cannot_know(
        console: Console) -> None:
    await console.login()
    page = await (await console.client.get("/health")).text()
    assert "has no depths to read" in page
    assert "Promotional window" in page


async def test_an_unchanged_token_variable_is_not_a_token_change(console: Console) -> None:
    csrf = await console.login()
    await console.client.post("/senders/new", data={
        **GOOD, "token": "", "token_env": "ACME_ICS_TOKEN", "csrf": csrf})
    assert console.source.load().senders.named("acme-otp").token_env == "ACME_ICS_TOKEN"
    edit = await (await console.client.get("/senders/acme-otp/edit")).text()
    assert 'value="ACME_ICS_TOKEN"' in edit
    page = await (await console.client.post("/senders/acme-otp/edit", data={
        **GOOD, "token": "", "token_env": "ACME_ICS_TOKEN", "rate_per_s": "50",
        "csrf": csrf})).text()
    assert "updated sender acme-otp: rate_per_s" in page


async def test_ids_with_odd_characters_are_escaped_and_linked(console: Console) -> None:
    await console.login()
    page = await (await console.client.get("/messages", params={
        "q": "<script>alert(1)</script>"})).text()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    missing = await console.client.get("/campaigns/a/b%20c")
    assert missing.status == 404
    assert "no campaign 'a/b c' is known" in await missing.text()


async def test_a_test_sms_is_checked_like_ics_sms_senders_test(console: Console) -> None:
    csrf = await console.login()
    await console.client.post("/senders/new", data={**GOOD, "csrf": csrf})
    bad_number = await console.client.post("/senders/acme-otp/test", data={
        "csrf": csrf, "to": "12345", "text": "hi", "dlt_template_id": ""})
    assert bad_number.status == 422
    assert '<p class="field-error" id="test-to-error">must be E.164' in await bad_number.text()
    no_template = await console.client.post("/senders/acme-otp/test", data={
        "csrf": csrf, "to": "+919812345678", "text": "hi", "dlt_template_id": ""})
    assert no_template.status == 422
    assert ('<p class="field-error" id="test-dlt_template_id-error">required for +91 numbers'
            in await no_template.text())


async def test_behind_tls_the_cookie_is_secure_and_browsers_keep_to_https(
        console_settings: Settings, tmp_path: Path) -> None:
    settings = console_settings.model_copy(update={"console_secure_cookie": True})
    app = create_console_app(settings, senders=MemorySenderSource(),
                             messages=InMemoryMessageStore(),
                             users=FileUserStore(tmp_path / "console-users.json"))
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/login")
        assert "Secure" in response.headers["Set-Cookie"]
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
