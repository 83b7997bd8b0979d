"""The ``ics-sms`` command group."""

from __future__ import annotations

import click
from pydantic import ValidationError

from ics_sms import __version__
from ics_sms.cli.bench_cmd import bench_command
from ics_sms.cli.campaigns_cmd import campaigns_group, messages_group
from ics_sms.cli.common import CliError, ErrorHandlingGroup, load_settings
from ics_sms.cli.console_cmd import console_group
from ics_sms.cli.dead_letters_cmd import dead_letters_group
from ics_sms.cli.demo_cmd import demo_command
from ics_sms.cli.events_cmd import events_command
from ics_sms.cli.publish_cmd import publish_command
from ics_sms.cli.receiver_cmd import receiver_command
from ics_sms.cli.sandbox_cmd import sandbox_command
from ics_sms.cli.schemas_cmd import schemas_group
from ics_sms.cli.senders_cmd import senders_group
from ics_sms.cli.topology_cmd import topology_command
from ics_sms.cli.worker_cmd import worker_command
from ics_sms.logs import configure_logging
from ics_sms.schemas.settings import LogSettings

__all__ = ["cli", "main"]


@click.group(cls=ErrorHandlingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ics-sms")
def cli() -> None:
    """Queue-based SMS connector for the ICS gateway.

    Configuration comes from ICS_SMS_* environment variables (see the README).
    """
    # The group runs before a subcommand parses its --help: an invalid environment must not
    # stop that. Commands that need settings load them again and fail with the reason.
    try:
        settings = load_settings()
    except CliError:
        try:
            logging_only = LogSettings()
        except ValidationError:
            logging_only = LogSettings.model_construct()
        configure_logging(logging_only.log_level, logging_only.log_format)
        return
    configure_logging(settings.log_level, settings.log_format)


cli.add_command(demo_command)
cli.add_command(senders_group)
cli.add_command(schemas_group)
cli.add_command(topology_command)
cli.add_command(sandbox_command)
cli.add_command(publish_command)
cli.add_command(worker_command)
cli.add_command(receiver_command)
cli.add_command(events_command)
cli.add_command(bench_command)
cli.add_command(dead_letters_group)
cli.add_command(campaigns_group)
cli.add_command(messages_group)
cli.add_command(console_group)


def main() -> None:
    cli(prog_name="ics-sms")
