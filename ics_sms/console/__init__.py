"""The operator console: a web screen for senders, campaigns, messages, dead letters, health."""
