"""The fault suite: real RabbitMQ, real worker/receiver/sandbox processes, every message
accounted for. Each scenario runs in two sizes: ``fast`` (every CI run) and ``full``
(``python -m pytest -m chaos``). See docs/reliability.md."""
