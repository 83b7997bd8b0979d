"""``python -m ics_sms`` is the ``ics-sms`` command."""

from ics_sms.cli import main

main()
