"""``ics-sms demo``: the whole pipeline in one command, on the embedded broker or RabbitMQ."""
