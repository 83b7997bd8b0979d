"""The callbacks receiver: ICS delivery and click receipts in, receipt events out.

``create_app`` builds the aiohttp application, ``start_receiver`` serves it in this process
(``RunningReceiver.stop`` ends it), ``run_receiver`` serves it until a signal,
``ics_sms.callbacks.receipts`` holds the pure mapping of ICS receipts to events and
``ics_sms.callbacks.tail`` the ``ics-sms events`` consumer.
"""

from ics_sms.callbacks.app import create_app
from ics_sms.callbacks.serve import RunningReceiver, StartupError, run_receiver, start_receiver

__all__ = ["RunningReceiver", "StartupError", "create_app", "run_receiver", "start_receiver"]
