"""How fast the producer publishes with confirms: ``python -m ics_sms.producers.bench``.

Publishes ``--count`` small send requests (validated from dicts, as a campaign engine would
hand them over) into a throw-away namespace, prints msgs/s, then deletes the namespace.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click

from ics_sms.broker.admin import delete_topology
from ics_sms.producers.publisher import Producer
from ics_sms.schemas.settings import redact_url
from ics_sms.schemas.topology import Topology

__all__ = ["BenchResult", "bench", "main"]


@dataclass(frozen=True, slots=True)
class BenchResult:
    count: int
    elapsed_s: float

    @property
    def rate_per_s(self) -> float:
        return self.count / self.elapsed_s if self.elapsed_s > 0 else float("inf")


def _requests(count: int) -> Iterator[dict[str, Any]]:
    for n in range(count):
        yield {"message_id": f"bench-{n}", "campaign_id": "bench",
               "to": f"+9198{n % 100_000_000:08d}", "text": f"Your code is {n % 10_000:04d}"}


def bench(url: str, count: int, *, max_in_flight: int = 2000) -> BenchResult:
    """Publish ``count`` requests into a fresh namespace, timed; the namespace is deleted."""
    topology = Topology(namespace=f"bench{uuid.uuid4().hex[:8]}.")
    with Producer(url, topology, max_in_flight=max_in_flight,
                  connection_name="ics-sms producer bench") as producer:
        try:
            started = time.perf_counter()
            published = producer.publish_many(_requests(count))
            elapsed = time.perf_counter() - started
        finally:
            delete_topology(url, topology)
    return BenchResult(published, elapsed)


@click.command()
@click.option("--url", envvar="RABBITMQ_URL", default="amqp://guest:guest@127.0.0.1:5672/",
              show_default=True, help="Broker URL (or RABBITMQ_URL).")
@click.option("--count", type=click.IntRange(min=1), default=50_000, show_default=True)
@click.option("--max-in-flight", type=click.IntRange(min=1), default=2000, show_default=True)
def main(url: str, count: int, max_in_flight: int) -> None:
    """Measure the producer's confirmed publish rate."""
    result = bench(url, count, max_in_flight=max_in_flight)
    click.echo(f"published {result.count} messages to {redact_url(url)} in "
               f"{result.elapsed_s:.2f} s: {result.rate_per_s:,.0f} msgs/s (publisher confirms, "
               f"{max_in_flight} in flight)")


if __name__ == "__main__":
    main()
