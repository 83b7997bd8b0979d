"""``ics-sms schemas``: publish the wire contract."""

from __future__ import annotations

from pathlib import Path

import click

from ics_sms.cli.common import CliError, load_settings
from ics_sms.schemas.export import export

__all__ = ["schemas_group"]


@click.group("schemas")
def schemas_group() -> None:
    """The wire contract as JSON Schema and AsyncAPI."""


@schemas_group.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def export_command(directory: Path) -> None:
    """Write SendRequest/ReceiptEvent JSON Schemas and asyncapi.json into DIRECTORY."""
    try:
        written = export(directory, load_settings().topology)
    except OSError as exc:
        raise CliError(f"cannot write to {directory}: {exc.strerror}") from None
    for path in written:
        click.echo(str(path))
