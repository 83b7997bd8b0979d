"""The smsgid we give ICS: ``<message_id>.<mac>``, so forged receipts are refused."""

from __future__ import annotations

import pytest

from ics_sms.schemas.smsgid import SmsgidSigner

SECRET = "callback-secret-now"
PREVIOUS = "callback-secret-before"


@pytest.fixture
def signer() -> SmsgidSigner:
    return SmsgidSigner(SECRET)


@pytest.mark.parametrize(
    "message_id", ["msg-1", "a", "campaign.42.msg.7", "ns:id_with-all.chars", "x" * 64]
)
def test_a_signed_id_verifies_to_the_message_id(signer: SmsgidSigner, message_id: str) -> None:
    smsgid = signer.sign(message_id)
    assert smsgid.startswith(message_id + ".")
    assert signer.verify(smsgid) == message_id


def test_signing_is_deterministic(signer: SmsgidSigner) -> None:
    assert signer.sign("msg-1") == SmsgidSigner(SECRET).sign("msg-1")


def test_the_mac_is_short_and_url_safe(signer: SmsgidSigner) -> None:
    mac = signer.sign("msg-1").rpartition(".")[2]
    assert len(mac) == 11  # 64 bits, base64url without padding
    assert mac.replace("-", "").replace("_", "").isalnum()


def test_an_smsgid_fits_the_ics_field_for_the_longest_message_id(signer: SmsgidSigner) -> None:
    assert len(signer.sign("x" * 64)) <= 100


def test_different_messages_get_different_macs(signer: SmsgidSigner) -> None:
    assert signer.sign("msg-1").rpartition(".")[2] != signer.sign("msg-2").rpartition(".")[2]


def test_another_secret_gives_another_mac() -> None:
    assert SmsgidSigner("one").sign("msg-1") != SmsgidSigner("two").sign("msg-1")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s.replace("msg-1", "msg-2", 1),  # receipts for another message
        lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),  # changed MAC
        lambda s: s.rpartition(".")[0],  # MAC dropped
        lambda s: s + "x",  # MAC extended
        lambda s: s.rpartition(".")[0] + ".",  # empty MAC
        lambda s: "." + s.rpartition(".")[2],  # empty message id
        lambda s: s.upper(),
        lambda s: "msg-1",
        lambda s: "",
        lambda s: ".",
    ],
)
def test_tampered_smsgids_are_refused(signer: SmsgidSigner, tamper: object) -> None:
    forged = tamper(signer.sign("msg-1"))  # type: ignore[operator]
    assert signer.verify(forged) is None


def test_a_dot_inside_the_message_id_cannot_be_used_to_forge(signer: SmsgidSigner) -> None:
    smsgid = signer.sign("a.b")
    assert signer.verify(smsgid) == "a.b"
    mac = smsgid.rpartition(".")[2]
    assert signer.verify(f"a.{mac}") is None
    assert signer.verify(f"b.{mac}") is None


@pytest.mark.parametrize("smsgid", ["msg-1.é", "ünïcödé.AAAAAAAAAAA", "msg-1.\u0000", "m.😀😀"])
def test_arbitrary_text_from_a_receipt_is_refused_not_crashing(
    signer: SmsgidSigner, smsgid: str
) -> None:
    # ``meta`` comes from an HTTP request anybody can send: any text is possible.
    assert signer.verify(smsgid) is None


def test_the_previous_secret_is_accepted_during_rotation() -> None:
    old = SmsgidSigner(PREVIOUS).sign("msg-1")
    rotating = SmsgidSigner(SECRET, previous=[PREVIOUS])
    assert rotating.verify(old) == "msg-1"
    assert rotating.verify(rotating.sign("msg-1")) == "msg-1"


def test_new_smsgids_are_signed_with_the_current_secret() -> None:
    rotating = SmsgidSigner(SECRET, previous=[PREVIOUS])
    assert rotating.sign("msg-1") == SmsgidSigner(SECRET).sign("msg-1")
    assert SmsgidSigner(PREVIOUS).verify(rotating.sign("msg-1")) is None


def test_without_the_previous_secret_old_smsgids_are_refused() -> None:
    assert SmsgidSigner(SECRET).verify(SmsgidSigner(PREVIOUS).sign("msg-1")) is None


def test_empty_previous_secrets_are_ignored() -> None:
    assert "keys=1" in repr(SmsgidSigner(SECRET, previous=["", ""]))


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        SmsgidSigner("")


def test_repr_hides_the_secrets() -> None:
    text = repr(SmsgidSigner(SECRET, previous=[PREVIOUS]))
    assert SECRET not in text
    assert PREVIOUS not in text
    assert "keys=2" in text
