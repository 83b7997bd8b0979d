"""Console accounts: scrypt hashes, the accounts file (0600) and the registry's table."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest

from ics_sms.console.users import (
    FileUserStore,
    PostgresUserStore,
    Role,
    User,
    UserError,
    UserStore,
    check_login,
    check_name,
    hash_password,
    open_user_store,
    verify_password,
)
from ics_sms.schemas.settings import Settings

PASSWORD = "a long enough password"


def test_a_hash_checks_its_own_password_only() -> None:
    encoded = hash_password(PASSWORD)
    assert encoded.startswith("scrypt$16384$8$1$")
    assert PASSWORD not in encoded
    assert verify_password(PASSWORD, encoded)
    assert not verify_password(PASSWORD + "!", encoded)
    assert hash_password(PASSWORD) != encoded  # a fresh salt every time


@pytest.mark.parametrize("encoded", ["", "plain", "bcrypt$1$2$3$a$b", "scrypt$x$8$1$a$b"])
def test_a_malformed_hash_matches_nothing(encoded: str) -> None:
    assert not verify_password(PASSWORD, encoded)


def test_short_passwords_and_odd_names_are_refused() -> None:
    with pytest.raises(UserError, match="at least 12 characters"):
        hash_password("short")
    with pytest.raises(UserError, match="name: "):
        check_name("no spaces")
    assert check_name(" Ada@Ops ") == "ada@ops"


def test_login_of_an_unknown_name_fails_like_a_wrong_password() -> None:
    user = User("ada", Role.ADMIN, hash_password(PASSWORD))
    assert check_login(user, PASSWORD) == user
    assert check_login(user, "wrong password!") is None
    assert check_login(None, PASSWORD) is None


def _round_trip(store: UserStore) -> None:
    assert store.all() == []
    store.put(User("ada", Role.ADMIN, hash_password(PASSWORD)))
    store.put(User("vic", Role.VIEWER, hash_password(PASSWORD)))
    store.put(User("vic", Role.ADMIN, hash_password(PASSWORD)))  # replaced
    assert [(u.name, u.role) for u in store.all()] == [("ada", Role.ADMIN),
                                                       ("vic", Role.ADMIN)]
    found = store.get("ada")
    assert found is not None and verify_password(PASSWORD, found.password_hash)
    assert store.delete("ada")
    assert not store.delete("ada")
    assert store.get("ada") is None


def test_the_accounts_file_is_owner_only(tmp_path: Path) -> None:
    store = FileUserStore(tmp_path / "console-users.json")
    _round_trip(store)
    assert stat.S_IMODE((tmp_path / "console-users.json").stat().st_mode) == 0o600


def test_the_accounts_live_in_the_registry_s_database(postgres_url: str) -> None:
    namespace = f"t{uuid.uuid4().hex[:10]}."
    store = PostgresUserStore(postgres_url, namespace)
    _round_trip(store)
    assert PostgresUserStore(postgres_url, "other.").get("vic") is None  # kept apart
    store.delete("vic")


def test_accounts_are_kept_beside_the_senders(tmp_path: Path) -> None:
    beside_file = open_user_store(Settings(senders_file=tmp_path / "conf" / "senders.toml"))
    assert isinstance(beside_file, FileUserStore)
    assert beside_file.path == tmp_path / "conf" / "console-users.json"
    in_registry = open_user_store(Settings(senders_url="postgresql://u:p@db/ics"))
    assert isinstance(in_registry, PostgresUserStore)
    assert "p@db" not in in_registry.description
