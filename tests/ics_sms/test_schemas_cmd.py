"""``ics-sms schemas export``: publish the wire contract as files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from jsonschema import Draft202012Validator

from ics_sms.cli.main import cli
from ics_sms.schemas.export import asyncapi_document, json_schemas
from ics_sms.schemas.topology import Topology

FILES = ["ReceiptEvent.schema.json", "SendRequest.schema.json", "asyncapi.json"]


pytestmark = pytest.mark.usefixtures("isolated_logging")


def export_cmd(directory: Path | str, **env: str) -> Result:
    return CliRunner().invoke(cli, ["schemas", "export", str(directory)],
                              env={"ICS_SMS_LOG_FORMAT": "json", **env})


def test_export_writes_the_schemas_and_the_asyncapi_document(tmp_path: Path) -> None:
    target = tmp_path / "out" / "contract"
    result = export_cmd(target)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in target.iterdir()) == FILES
    assert sorted(Path(line).name for line in result.stdout.splitlines()) == FILES
    for name in ("SendRequest", "ReceiptEvent"):
        schema = json.loads((target / f"{name}.schema.json").read_text())
        Draft202012Validator.check_schema(schema)
        assert schema == json_schemas()[name]
    assert json.loads((target / "asyncapi.json").read_text()) == asyncapi_document()


def test_export_uses_the_namespace_of_the_environment(tmp_path: Path) -> None:
    result = export_cmd(tmp_path, ICS_SMS_NAMESPACE="staging.")
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "asyncapi.json").read_text())
    assert document == asyncapi_document(Topology(namespace="staging."))


def test_export_overwrites_an_earlier_export(tmp_path: Path) -> None:
    (tmp_path / "asyncapi.json").write_text("stale")
    assert export_cmd(tmp_path).exit_code == 0
    assert json.loads((tmp_path / "asyncapi.json").read_text())["asyncapi"] == "3.0.0"


def test_an_unwritable_target_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = export_cmd(blocker / "sub")
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [
        f"Error: cannot write to {blocker / 'sub'}: Not a directory"
    ]


def test_a_file_as_target_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "asyncapi.json"
    target.write_text("{}")
    result = export_cmd(target)
    assert result.exit_code == 2
    assert "is a file" in result.stderr
    assert target.read_text() == "{}"
