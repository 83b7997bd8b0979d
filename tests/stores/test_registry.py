"""The PostgreSQL senders registry, against a real PostgreSQL.

The server comes from ``ICS_SMS_TEST_POSTGRES_URL`` (default: the local one); under
``CI=true`` a missing server is a failure, never a skip. Each test has a namespace of its
own (the ``namespace`` fixture) and removes its rows afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from ics_sms.schemas.senders import (
    ClickTracking,
    RetiredSender,
    Sender,
    Senders,
    SenderType,
)
from ics_sms.schemas.settings import Settings
from ics_sms.stores.registry import (
    AUDIT_TABLE,
    CONFIG_TABLE,
    SENDERS_TABLE,
    PostgresSenderSource,
)
from ics_sms.stores.senders import SenderConflict, SenderSourceError, open_sender_source

TOKEN = "ics-token-VERY-secret-4242"
OTHER_TOKEN = "ics-token-ALSO-secret-7777"
KEY1 = Fernet.generate_key().decode()
KEY2 = Fernet.generate_key().decode()


class OpenRegistry(Protocol):
    """Opens a source on the test's namespace (or ``ns``) with ``keys`` (default KEY1)."""

    def __call__(self, keys: str | None = ..., ns: str = ...) -> PostgresSenderSource: ...


@pytest.fixture
def sources(postgres_url: str, namespace: str) -> Iterator[list[PostgresSenderSource]]:
    """Every source a test opens (closed, and the namespace's rows deleted, afterwards)."""
    opened: list[PostgresSenderSource] = []
    yield opened
    for source in opened:
        source.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for table in (CONFIG_TABLE, SENDERS_TABLE, AUDIT_TABLE):
            conn.execute(f"DELETE FROM {table} WHERE namespace LIKE %s", [namespace + "%"])


@pytest.fixture
def registry(postgres_url: str, namespace: str,
             sources: list[PostgresSenderSource]) -> OpenRegistry:
    def open_(keys: str | None = KEY1, ns: str = namespace) -> PostgresSenderSource:
        source = PostgresSenderSource(postgres_url, namespace=ns,
                                      keys=None if keys is None else SecretStr(keys))
        sources.append(source)
        return source

    return open_


def sender(name: str, **fields: object) -> Sender:
    base: dict[str, object] = {"name": name, "type": "service_implicit", "sender_id": "ACMEIN",
                               "username": "acme", "token_env": "ACME_TOKEN"}
    return Sender.model_validate({**base, **fields})


def full_senders(tmp_path: Path) -> Senders:
    inline = sender("otp", token=TOKEN, token_env=None, click_tracking=ClickTracking.SELF,
                    dlt_entity_id="1201159100000000000", rate_per_s=12.5,
                    resend_uncertain=True)
    env = sender("promo", type=SenderType.PROMOTIONAL, sender_id="123456", username="p",
                 disabled="paused by ops: DLT template expired")
    path = sender("bills", type=SenderType.TRANSACTIONAL, sender_id="BILLSX", token_env=None,
                  token_file=tmp_path / "bills.token", resend_uncertain=False)
    retired = RetiredSender(name="old", tracking_token="old-tracking-token-0123",
                            removed_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    return Senders(default="promo", senders={s.name: s for s in (inline, env, path)},
                   retired=(retired,))


def raw_rows(postgres_url: str, namespace: str) -> str:
    """Every row of the namespace in every table, as PostgreSQL prints them."""
    with psycopg.connect(postgres_url) as conn:
        return "\n".join(
            str(row[0]) for table in (CONFIG_TABLE, SENDERS_TABLE, AUDIT_TABLE)
            for row in conn.execute(f"SELECT t::text FROM {table} t WHERE namespace = %s",
                                    [namespace]))


def terminate(postgres_url: str, application_name: str) -> None:
    """Kill the one server connection of that name, as a restart or a network cut would."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        killed = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = %s", [application_name]).fetchall()
    assert killed == [(True,)]


def test_a_full_configuration_survives_the_round_trip(registry: OpenRegistry,
                                                      tmp_path: Path) -> None:
    senders = full_senders(tmp_path)
    saved = registry().save(senders, expected=None, actor="alice", action="senders import")
    assert saved.version == "1"

    loaded = registry().load()
    assert loaded.version == "1"
    assert loaded.senders == senders
    otp = loaded.senders.named("otp")
    assert otp.token is not None and otp.token.get_secret_value() == TOKEN
    assert loaded.senders.named("promo").disabled == "paused by ops: DLT template expired"
    assert loaded.senders.retired == senders.retired
    assert loaded.senders.default == "promo"


def test_an_empty_namespace_is_an_empty_configuration_at_version_0(registry: OpenRegistry) -> None:
    snapshot = registry().load()
    assert (snapshot.senders, snapshot.version) == (Senders(), "0")
    assert registry().history() == []


def test_the_token_is_not_readable_in_the_tables(registry: OpenRegistry, postgres_url: str,
                                                 namespace: str, tmp_path: Path) -> None:
    source = registry()
    source.save(full_senders(tmp_path), expected=None, actor="alice", action="import")
    senders = source.load().senders
    source.save(senders.replace(senders.named("otp").model_copy(
        update={"token": SecretStr(OTHER_TOKEN)})), expected="1", actor="bob", action="edit")

    rows = raw_rows(postgres_url, namespace)
    assert "ACME_TOKEN" in rows  # a reference to the token is stored as it is
    assert TOKEN not in rows and OTHER_TOKEN not in rows
    assert "VERY-secret" not in rows and "ALSO-secret" not in rows


def test_an_inline_token_is_refused_without_a_key(registry: OpenRegistry, tmp_path: Path) -> None:
    with pytest.raises(SenderSourceError, match=r"'otp'.*ICS_SMS_SENDERS_KEY is not set") as err:
        registry(keys=None).save(full_senders(tmp_path), expected=None, actor="a", action="b")
    assert TOKEN not in str(err.value)

    by_reference = Senders(default="env", senders={"env": sender("env")})
    registry(keys=None).save(by_reference, expected=None, actor="a", action="b")
    assert registry(keys=None).load().senders == by_reference


def test_a_wrong_key_fails_the_load_naming_the_sender(registry: OpenRegistry,
                                                      tmp_path: Path) -> None:
    registry().save(full_senders(tmp_path), expected=None, actor="a", action="b")

    with pytest.raises(SenderSourceError, match=r"sender 'otp'.*cannot be decrypted") as err:
        registry(keys=KEY2).load()
    assert TOKEN not in str(err.value) and KEY1 not in str(err.value)
    with pytest.raises(SenderSourceError, match=r"sender 'otp'.*ICS_SMS_SENDERS_KEY is not set"):
        registry(keys=None).load()


def test_a_token_copied_onto_another_sender_does_not_decrypt(registry: OpenRegistry,
                                                             postgres_url: str,
                                                             namespace: str) -> None:
    two = Senders(default="a", senders={n: sender(n, token=TOKEN, token_env=None)
                                        for n in ("a", "b")})
    registry().save(two, expected=None, actor="a", action="b")
    with psycopg.connect(postgres_url) as conn:
        conn.execute(f"UPDATE {SENDERS_TABLE} SET token_encrypted = (SELECT token_encrypted "
                     f"FROM {SENDERS_TABLE} WHERE namespace = %s AND name = 'a') "
                     "WHERE namespace = %s AND name = 'b'", [namespace, namespace])

    with pytest.raises(SenderSourceError, match=r"sender 'b'.*belongs to another sender"):
        registry().load()


def test_a_malformed_key_is_refused_without_echoing_it(registry: OpenRegistry) -> None:
    with pytest.raises(SenderSourceError, match="key 2 of 2 is not a Fernet key") as err:
        registry(keys=f"{KEY1},not-a-key-hunter2")
    assert "hunter2" not in str(err.value) and KEY1 not in str(err.value)


def test_keys_rotate_then_the_old_one_can_be_dropped(registry: OpenRegistry,
                                                     tmp_path: Path) -> None:
    senders = full_senders(tmp_path)
    registry(keys=KEY1).save(senders, expected=None, actor="a", action="import")

    both = registry(keys=f"{KEY2},{KEY1}")
    assert both.load().senders == senders  # the old key still decrypts
    assert both.rotate_keys("ops") == 1
    assert both.rotate_keys("ops") == 0

    snapshot = registry(keys=KEY2).load()
    assert snapshot.senders == senders
    assert snapshot.version == "1"  # the configuration itself did not change
    with pytest.raises(SenderSourceError, match="sender 'otp'"):
        registry(keys=KEY1).load()
    assert both.history(1)[0].action == "rotate keys"


def test_a_save_against_a_moved_version_is_a_conflict(registry: OpenRegistry) -> None:
    alice, bob = registry(), registry()
    read = alice.load()
    one = read.senders.add(sender("one"))
    assert bob.save(one, expected=read.version, actor="bob", action="add").version == "1"

    with pytest.raises(SenderConflict, match="changed since it was read"):
        alice.save(read.senders.add(sender("two")), expected=read.version, actor="alice",
                   action="add")
    assert alice.load().senders == one

    again = alice.load()
    both = again.senders.add(sender("two"))
    assert alice.save(both, expected=again.version, actor="alice", action="add").version == "2"
    assert bob.save(both, expected=None, actor="bob", action="force").version == "3"


def test_every_change_is_audited_by_sender_without_the_token(registry: OpenRegistry,
                                                             postgres_url: str,
                                                             namespace: str) -> None:
    source = registry()
    s = source.save(Senders().add(sender("a", token=TOKEN, token_env=None)),
                    expected="0", actor="alice", action="senders add")
    a = s.senders.named("a")
    steps = [
        s.senders.replace(a.model_copy(update={"token": SecretStr(OTHER_TOKEN)})),
        s.senders.replace(a.model_copy(update={"token": SecretStr(OTHER_TOKEN),
                                               "rate_per_s": 5.0, "username": "x"})),
    ]
    for senders in steps:
        s = source.save(senders, expected=s.version, actor="bob", action="senders edit")
    s = source.save(s.senders.replace(s.senders.named("a").model_copy(
        update={"disabled": "fraud suspected"})), expected=s.version, actor="carol",
        action="senders disable")
    s = source.save(s.senders.add(sender("b")).with_default("b"), expected=s.version,
                    actor="dave", action="senders add")
    s = source.save(s.senders.remove("a"), expected=s.version, actor="erin",
                    action="senders remove")
    source.save(s.senders, expected=s.version, actor="frank", action="senders edit")

    history = source.history()
    assert [(h.actor, h.sender, h.detail) for h in history] == [
        ("frank", None, "saved without changes"),
        ("erin", "a", "removed (its tracking URL still accepts receipts for the grace period)"),
        ("dave", "b", "default sender: a -> b"),
        ("dave", "b", "added (service_implicit, ACMEIN, token from $ACME_TOKEN)"),
        ("carol", "a", "disabled: fraud suspected"),
        ("bob", "a", "changed rate_per_s, username"),
        ("bob", "a", "token changed"),
        ("alice", "a", "default sender: (none) -> a"),
        ("alice", "a", "added (service_implicit, ACMEIN, inline token (encrypted))"),
    ]
    assert history[0].action == "senders edit" and history[-1].action == "senders add"
    assert [h.detail for h in source.history(limit=2)] == [h.detail for h in history[:2]]

    with psycopg.connect(postgres_url) as conn:
        audit = "\n".join(str(r[0]) for r in conn.execute(
            f"SELECT t::text FROM {AUDIT_TABLE} t WHERE namespace = %s", [namespace]))
    assert "fraud suspected" in audit
    assert TOKEN not in audit and OTHER_TOKEN not in audit and "secret" not in audit


def test_a_switch_of_token_source_is_audited_without_the_token(registry: OpenRegistry) -> None:
    source = registry()
    s = source.save(Senders().add(sender("a", token=TOKEN, token_env=None)), expected="0",
                    actor="a", action="add")
    s = source.save(s.senders.replace(sender("a", tracking_token=s.senders.named("a")
                                             .tracking_token)),
                    expected=s.version, actor="b", action="edit")
    source.save(s.senders.replace(sender("a", token=OTHER_TOKEN, token_env=None,
                                         tracking_token=s.senders.named("a").tracking_token)),
                expected=s.version, actor="c", action="edit")

    assert [h.detail for h in source.history(2)] == [
        "token source now: inline token (encrypted)",
        "token source now: token from $ACME_TOKEN",
    ]
    assert source.load().senders.named("a").token == SecretStr(OTHER_TOKEN)


def test_an_invalid_stored_sender_fails_the_load_naming_it(registry: OpenRegistry,
                                                           postgres_url: str,
                                                           namespace: str) -> None:
    registry().save(Senders().add(sender("a")), expected="0", actor="a", action="add")
    with psycopg.connect(postgres_url) as conn:
        conn.execute(f"UPDATE {SENDERS_TABLE} SET fields = fields || '{{\"rate_per_s\": -1}}' "
                     "WHERE namespace = %s", [namespace])

    with pytest.raises(SenderSourceError, match="sender 'a': rate_per_s"):
        registry().load()


def test_namespaces_are_isolated(registry: OpenRegistry, namespace: str) -> None:
    ours, theirs = registry(), registry(ns=namespace + "other.")
    ours.save(Senders().add(sender("a")), expected="0", actor="a", action="add")

    assert theirs.load().version == "0" and len(theirs.load().senders) == 0
    assert theirs.history() == []
    theirs.save(Senders().add(sender("b")), expected="0", actor="b", action="add")
    assert list(ours.load().senders.senders) == ["a"]
    assert ours.load().version == "1"


async def test_a_save_wakes_a_waiting_reader_at_once(registry: OpenRegistry) -> None:
    reader, writer = registry(), registry()
    version = (await asyncio.to_thread(reader.load)).version
    await reader.wait_for_change(version, 0.05)  # the listener is now connected
    waiting = asyncio.create_task(reader.wait_for_change(version, 30))
    await asyncio.sleep(0)
    await asyncio.to_thread(writer.save, Senders().add(sender("a")), expected=version,
                            actor="a", action="add")
    # Returning at all (long before its 30 s) is the NOTIFY arriving; no timing assertion.
    await asyncio.wait_for(waiting, 25)
    assert (await asyncio.to_thread(reader.load)).version == "1"


async def test_a_change_before_the_wait_began_returns_at_once(registry: OpenRegistry) -> None:
    reader, writer = registry(), registry()
    version = reader.load().version
    writer.save(Senders().add(sender("a")), expected=version, actor="a", action="add")
    await asyncio.wait_for(reader.wait_for_change(version, 30), 25)


async def test_a_broken_listener_is_replaced_on_the_next_call(
        registry: OpenRegistry, postgres_url: str, namespace: str) -> None:
    reader, writer = registry(), registry()
    await reader.wait_for_change("0", 0.05)
    terminate(postgres_url, f"ics-sms senders listener {namespace}")
    await reader.wait_for_change("0", 0.2)  # notices the dead connection; does not raise

    waiting = asyncio.create_task(reader.wait_for_change("0", 30))
    await asyncio.sleep(0.05)
    await asyncio.to_thread(writer.save, Senders().add(sender("a")), expected="0",
                            actor="a", action="add")
    await asyncio.wait_for(waiting, 25)


async def test_waiting_on_an_unreachable_registry_returns_after_the_timeout() -> None:
    source = PostgresSenderSource("postgresql://u:pw@127.0.0.1:1/db", connect_timeout_s=1)
    await source.wait_for_change("0", 0.1)
    source.close()


def test_a_connection_killed_between_calls_is_replaced(registry: OpenRegistry,
                                                       postgres_url: str, namespace: str) -> None:
    source = registry()
    source.load()
    terminate(postgres_url, f"ics-sms senders {namespace}")
    assert source.load().version == "0"


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_errors_and_description_never_show_the_password(postgres_url: str) -> None:
    refused = with_password(postgres_url, "pw-HUNTER2").replace(
        f":{urlsplit(postgres_url).port or 5432}/", ":1/")
    source = PostgresSenderSource(refused, connect_timeout_s=2)
    assert "HUNTER2" not in source.description and "***" in source.description
    assert "HUNTER2" not in repr(source)
    with pytest.raises(SenderSourceError, match="cannot connect") as err:
        source.load()
    assert "HUNTER2" not in str(err.value) and "***" in str(err.value)

    in_query = PostgresSenderSource("postgresql://127.0.0.1:1/db?password=pw-HUNTER2")
    assert "HUNTER2" not in in_query.description

    with pytest.raises(SenderSourceError, match="ICS_SMS_SENDERS_URL") as err:
        PostgresSenderSource("host=127.0.0.1 password=pw-HUNTER2")
    assert "HUNTER2" not in str(err.value)


def test_the_settings_open_the_registry(postgres_url: str, namespace: str,
                                        sources: list[PostgresSenderSource]) -> None:
    settings = Settings(senders_url=with_password(postgres_url, "pw-HUNTER2"),
                        namespace=namespace, senders_key=f"{KEY2},{KEY1}")
    source = open_sender_source(settings)
    assert isinstance(source, PostgresSenderSource)
    sources.append(source)
    assert source.namespace == namespace
    assert "HUNTER2" not in source.description
    assert source.load().version == "0"
