"""Broker access for the services: RabbitMQ through pika, or the embedded in-process broker."""

from ics_sms.broker.base import (
    Broker,
    BrokerError,
    ConnectionLost,
    Consumer,
    Delivery,
    Outgoing,
    PublishFailed,
    TopologyConflict,
)

__all__ = [
    "Broker",
    "BrokerError",
    "ConnectionLost",
    "Consumer",
    "Delivery",
    "Outgoing",
    "PublishFailed",
    "TopologyConflict",
]
