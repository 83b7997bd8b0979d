"""The ICS client's reasons for a failed request name where it tried, never a secret."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from pydantic import SecretStr

from ics_sms.workers.ics import IcsClient
from ics_sms.workers.policy import Disposition

TOKEN = SecretStr("ics-bearer-TOKEN-not-in-reasons")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def submit_to(base_url: str) -> str:
    async with aiohttp.ClientSession() as session:
        client = IcsClient(session, base_url, timeout_s=5)
        batch = client.build("acme", [client.record("+919000000001", "ACMEIN", "hi", "g1",
                                                    None, None)],
                             dlrurl="http://127.0.0.1:8080/ics/tracking-TOKEN/receipts",
                             urlshortening=False)
        result = await client.submit(batch, TOKEN)
    assert result.disposition is Disposition.RETRY
    assert result.reason is not None
    return result.reason


async def test_an_unreachable_ics_is_named_by_host_and_port() -> None:
    port = closed_port()
    reason = await submit_to(f"http://127.0.0.1:{port}")
    assert reason.startswith(f"ICS unreachable at 127.0.0.1:{port}: Client"), reason


@pytest.mark.parametrize(
    ("base_url", "where"),
    [("https://ics.invalid/api?key=url-KEY", "ics.invalid:443"),
     ("http://ics.invalid", "ics.invalid:80")],
)
async def test_the_reason_holds_host_and_port_only(base_url: str, where: str) -> None:
    reason = await submit_to(base_url)
    assert reason.startswith(f"ICS unreachable at {where}: "), reason
    for secret in ("url-KEY", "ics-bearer-TOKEN", "tracking-TOKEN"):
        assert secret not in reason
