"""A sample campaign: realistic Indian numbers, links, a few of the sandbox's failing numbers."""

from __future__ import annotations

import random
from collections.abc import Iterator

from ics_sms.schemas.messages import SendRequest

__all__ = ["TEMPLATE_ID", "sample_campaign"]

TEMPLATE_ID = "1207161000000000001"

# Sandbox test numbers that always end the same way (see the README's table).
_FIXED_OUTCOMES = [
    "+919000000901",  # failed 901 DND
    "+919000000906",  # failed 906 header blocked by DLT
    "+919000000914",  # failed 914 undelivered
    "+919000000400",  # refused by ICS: rejected
    "+919000000002",  # delivered and clicked
]
_OFFERS = ["20% off everything", "free delivery today", "buy 1 get 1", "early access"]


def _mobile(rng: random.Random) -> str:
    return f"+91{rng.choice('6789')}{rng.randrange(10**8, 10**9)}"


def sample_campaign(count: int, campaign_id: str, *, service: str, promotional: str,
                    seed: int = 7) -> Iterator[SendRequest]:
    """``count`` messages: a third OTPs (service lane), the rest offers with a link."""
    rng = random.Random(seed)
    for index in range(count):
        to = (_FIXED_OUTCOMES[index // 50 % len(_FIXED_OUTCOMES)] if index % 50 == 7
              else _mobile(rng))
        if index % 3 == 0:
            text, sender = f"{rng.randrange(1000, 9999)} is your ACME login code.", service
        elif index % 10 == 1:
            text = f"नमस्ते! {rng.choice(_OFFERS)}: https://shop.example.in/sale?i={index}"
            sender = promotional
        else:
            text = f"ACME: {rng.choice(_OFFERS)}. Shop now https://shop.example.in/sale?i={index}"
            sender = promotional
        yield SendRequest(
            message_id=f"{campaign_id}-{index}", campaign_id=campaign_id, to=to, text=text,
            sender=sender, dlt_template_id=TEMPLATE_ID,
            metadata={"variant": "A" if index % 2 else "B"},
        )
