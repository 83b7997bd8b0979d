"""The ics-sms application shell: the command line, logging, the ICS sandbox, demo, bench."""

__all__ = ["__version__"]

__version__ = "0.1.0"
