"""A local stand-in for ICS that speaks ICS_API.md: ``ics-sms sandbox``.

It answers ``POST /datasend`` like ICS (one result per record, in order) and later posts
delivery, failure and click receipts to the request's ``dlrurl``, retrying a receiver
that is down. Faults (latency, 5xx, throttling, outages) can be set at start or at run
time through ``POST /_control``; ``GET /_stats`` shows what happened. At run time it can
also accept a batch and then spoil the answer (late, 500, reset, HTML, half the records;
``answer_fault`` for ``answer_fault_requests`` requests), echo smsgids lower-cased, or
answer 400 to a request holding a record of ``poison_templateid``. It counts every
acceptance per smsgid (``GET /_stats?smsgids=1``): how many SMS it really sent.

Deterministic test numbers (wire form: country code + national number, no ``+``; the
E.164 form is the same with a leading ``+``):

==================  =====================================================================
number              outcome
==================  =====================================================================
919000000001        accepted, then a ``delivered`` receipt
919000000002        accepted, ``delivered``, then ``clicked`` whenever the request has
                    ``urlshortening: 1`` and the text holds a URL (click ratio ignored)
919000000003        accepted, and no receipt ever comes (a lost DLR)
9190000009NN        accepted, then a ``failed`` receipt with code 9NN, for every ICS code
                    900-920 (not 911): 919000000901 DND, 919000000906 header blocked by
                    DLT, 919000000918 duplicate...; descriptions from ``FAILURE_CODES``
919000000400        refused in the answer: ``Error: number barred (sandbox test number)``
919000000500        the whole request is answered ``500``
any other number    accepted; ``delivered`` with probability ``--delivery-ratio``, else
                    ``failed`` with a realistic code (914, 910, 901, 912, 905, 916, 904,
                    900); ``clicked`` with ``--click-ratio`` when ``urlshortening: 1`` and
                    the text holds a URL. Random choices follow ``--seed``.
==================  =====================================================================

A record is refused (``{"to", "smsgid", "Error"}``) when ``to`` is not digits only (7-15,
no ``+``), a ``91`` number is not a 10-digit Indian mobile, a ``91`` record lacks ``peid``
or ``templateid`` ("DLT template/entity missing"), the text or the header is empty, or the
text needs UCS-2 while ``allowunicode`` is false. Whole-request answers: ``401`` missing or
wrong credentials, ``403`` credentials of another user, ``400`` malformed body (with
reasons), ``429`` throttled (with ``Retry-After``), ``500`` injected error or test number,
``503`` outage.
"""

from ics_sms.sandbox.app import create_app
from ics_sms.sandbox.config import SandboxConfig
from ics_sms.sandbox.faults import ControlRequest
from ics_sms.sandbox.outcomes import (
    ALWAYS_CLICKED,
    ALWAYS_DELIVERED,
    FAILING_PREFIX,
    NEVER_RECEIPTED,
    REFUSED,
    SERVER_ERROR,
)
from ics_sms.sandbox.server import RunningSandbox, running_sandbox, start_sandbox

__all__ = [
    "ALWAYS_CLICKED",
    "ALWAYS_DELIVERED",
    "FAILING_PREFIX",
    "NEVER_RECEIPTED",
    "REFUSED",
    "SERVER_ERROR",
    "ControlRequest",
    "RunningSandbox",
    "SandboxConfig",
    "create_app",
    "running_sandbox",
    "start_sandbox",
]
