"""``ics-sms topology``: declare every exchange, queue and binding on the broker."""

from __future__ import annotations

import asyncio

import click

from ics_sms.broker.base import BrokerError, TopologyConflict
from ics_sms.broker.connect import open_broker
from ics_sms.cli.common import CliError, load_settings
from ics_sms.schemas.settings import Settings

__all__ = ["topology_command"]


async def _declare(settings: Settings) -> None:
    broker = await open_broker(settings, name="ics-sms topology")
    try:
        await broker.declare(settings.topology)
    finally:
        await broker.close()


@click.command("topology")
@click.option("--print", "print_only", is_flag=True, help="Only print what would be declared.")
def topology_command(print_only: bool) -> None:
    """Declare the topology (idempotent: running it twice changes nothing)."""
    settings = load_settings()
    topology = settings.topology
    if not print_only:
        try:
            asyncio.run(_declare(settings))
        except TopologyConflict as exc:
            raise CliError(f"an existing queue or exchange conflicts with ics-sms: {exc}. "
                           "Delete it or choose another ICS_SMS_NAMESPACE.") from None
        except BrokerError as exc:
            raise CliError(str(exc)) from None
    verb = "would declare" if print_only else "declared"
    for exchange in topology.exchanges():
        click.echo(f"{verb} exchange {exchange.name} ({exchange.type.value})")
    for queue in topology.queues():
        click.echo(f"{verb} queue    {queue.name} ({queue.arguments.get('x-queue-type')})")
    for binding in topology.bindings():
        click.echo(f"{verb} binding  {binding.exchange} -[{binding.routing_key}]-> "
                   f"{binding.queue}")
