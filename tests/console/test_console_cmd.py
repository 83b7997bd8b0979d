"""``ics-sms console users``: accounts from the command line; the console on its port."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from ics_sms.cli.main import cli
from ics_sms.console.users import FileUserStore, Role, verify_password
from tests.ics_sms.conftest import isolated_logging  # noqa: F401 -- the fixture

pytestmark = pytest.mark.usefixtures("isolated_logging")

PASSWORD = "twelve chars or more"


def invoke(tmp_path: Path, *args: str, input: str | None = None) -> tuple[int, str, str]:
    env = {"ICS_SMS_SENDERS_FILE": str(tmp_path / "senders.toml")}
    result = CliRunner().invoke(cli, list(args), input=input, env=env)
    return result.exit_code, result.stdout, result.stderr


def test_add_list_and_remove_an_account(tmp_path: Path) -> None:
    code, out, _ = invoke(tmp_path, "console", "users", "add", "Ada", "--role", "admin",
                          "--password-stdin", input=f"{PASSWORD}\n")
    assert code == 0
    assert "added console account ada (admin)" in out
    path = tmp_path / "console-users.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PASSWORD not in path.read_text()
    user = FileUserStore(path).get("ada")
    assert user is not None and user.role is Role.ADMIN
    assert verify_password(PASSWORD, user.password_hash)
    assert json.loads(path.read_text())["users"]["ada"]["role"] == "admin"
    assert invoke(tmp_path, "console", "users", "list")[1].split() == ["ada", "admin"]
    code, out, _ = invoke(tmp_path, "console", "users", "remove", "ada")
    assert code == 0
    assert "no console accounts" in invoke(tmp_path, "console", "users", "list")[1]


def test_a_short_password_is_refused(tmp_path: Path) -> None:
    code, _, err = invoke(tmp_path, "console", "users", "add", "ada", "--password-stdin",
                          input="short\n")
    assert code == 1
    assert "at least 12 characters" in err
    assert not (tmp_path / "console-users.json").exists()


def test_the_role_defaults_to_viewer(tmp_path: Path) -> None:
    invoke(tmp_path, "console", "users", "add", "vic", "--password-stdin",
           input=f"{PASSWORD}\n")
    user = FileUserStore(tmp_path / "console-users.json").get("vic")
    assert user is not None and user.role is Role.VIEWER
