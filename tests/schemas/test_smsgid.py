"""The smsgid we give ICS: ``<message_id>.<mac>``, so forged and cross-sender receipts are
refused."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from ics_sms.schemas.smsgid import SmsgidSigner

SECRET = "callback-secret-now"
PREVIOUS = "callback-secret-before"
ACME = "acme-otp"
BETA = "beta-otp"


@pytest.fixture
def signer() -> SmsgidSigner:
    return SmsgidSigner(SECRET)


@pytest.mark.parametrize(
    "message_id", ["msg-1", "a", "campaign.42.msg.7", "ns:id_with-all.chars", "x" * 64]
)
def test_a_signed_id_verifies_to_the_message_id(signer: SmsgidSigner, message_id: str) -> None:
    smsgid = signer.sign(message_id, ACME)
    assert smsgid.startswith(message_id + ".")
    assert signer.verify(smsgid, ACME) == message_id


def test_signing_is_deterministic(signer: SmsgidSigner) -> None:
    assert signer.sign("msg-1", ACME) == SmsgidSigner(SECRET).sign("msg-1", ACME)


def test_the_mac_is_short_and_url_safe(signer: SmsgidSigner) -> None:
    mac = signer.sign("msg-1", ACME).rpartition(".")[2]
    assert len(mac) == 11  # 64 bits, base64url without padding
    assert mac.replace("-", "").replace("_", "").isalnum()


def test_an_smsgid_fits_the_ics_field_for_the_longest_message_id(signer: SmsgidSigner) -> None:
    assert len(signer.sign("x" * 64, ACME)) <= 100


def test_different_messages_get_different_macs(signer: SmsgidSigner) -> None:
    macs = {signer.sign(m, ACME).rpartition(".")[2] for m in ("msg-1", "msg-2")}
    assert len(macs) == 2


def test_another_secret_gives_another_mac() -> None:
    assert SmsgidSigner("one").sign("msg-1", ACME) != SmsgidSigner("two").sign("msg-1", ACME)


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
    forged = tamper(signer.sign("msg-1", ACME))  # type: ignore[operator]
    assert signer.verify(forged, ACME) is None


def test_a_dot_inside_the_message_id_cannot_be_used_to_forge(signer: SmsgidSigner) -> None:
    smsgid = signer.sign("a.b", ACME)
    assert signer.verify(smsgid, ACME) == "a.b"
    mac = smsgid.rpartition(".")[2]
    assert signer.verify(f"a.{mac}", ACME) is None
    assert signer.verify(f"b.{mac}", ACME) is None


@pytest.mark.parametrize("smsgid", ["msg-1.é", "ünïcödé.AAAAAAAAAAA", "msg-1.\u0000", "m.😀😀"])
def test_arbitrary_text_from_a_receipt_is_refused_not_crashing(
    signer: SmsgidSigner, smsgid: str
) -> None:
    # ``meta`` comes from an HTTP request anybody can send: any text is possible.
    assert signer.verify(smsgid, ACME) is None


def test_the_previous_secret_is_accepted_during_rotation() -> None:
    old = SmsgidSigner(PREVIOUS).sign("msg-1", ACME)
    rotating = SmsgidSigner(SECRET, previous=[PREVIOUS])
    assert rotating.verify(old, ACME) == "msg-1"
    assert rotating.verify(rotating.sign("msg-1", ACME), ACME) == "msg-1"


def test_new_smsgids_are_signed_with_the_current_secret() -> None:
    rotating = SmsgidSigner(SECRET, previous=[PREVIOUS])
    assert rotating.sign("msg-1", ACME) == SmsgidSigner(SECRET).sign("msg-1", ACME)
    assert SmsgidSigner(PREVIOUS).verify(rotating.sign("msg-1", ACME), ACME) is None


def test_without_the_previous_secret_old_smsgids_are_refused() -> None:
    assert SmsgidSigner(SECRET).verify(SmsgidSigner(PREVIOUS).sign("msg-1", ACME), ACME) is None


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


def legacy(secret: str, message_id: str) -> str:
    """An smsgid as workers signed it before sender binding: MAC over the message id only."""
    mac = hmac.new(secret.encode(), message_id.encode(), hashlib.sha256).digest()[:8]
    return f"{message_id}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


class TestSenderBinding:
    def test_an_smsgid_verifies_only_for_the_sender_it_was_signed_for(
        self, signer: SmsgidSigner
    ) -> None:
        smsgid = signer.sign("msg-1", BETA)
        assert signer.verify(smsgid, BETA) == "msg-1"
        assert signer.verify(smsgid, ACME) is None

    def test_two_senders_get_two_smsgids_for_one_message_id(self, signer: SmsgidSigner) -> None:
        assert signer.sign("msg-1", ACME) != signer.sign("msg-1", BETA)

    def test_the_split_between_message_id_and_sender_is_unambiguous(
        self, signer: SmsgidSigner
    ) -> None:
        mac = signer.sign("a", "b.c").rpartition(".")[2]
        assert signer.verify(f"a.b.{mac}", "c") is None

    def test_a_bound_smsgid_is_not_a_legacy_one(self, signer: SmsgidSigner) -> None:
        assert signer.verify_legacy(signer.sign("msg-1", ACME)) is None

    def test_a_legacy_smsgid_is_recognised_but_bound_to_no_sender(
        self, signer: SmsgidSigner
    ) -> None:
        old = legacy(SECRET, "msg-1")
        assert signer.verify_legacy(old) == "msg-1"
        assert signer.verify(old, ACME) is None

    def test_legacy_smsgids_verify_under_the_previous_secret_too(self) -> None:
        rotating = SmsgidSigner(SECRET, previous=[PREVIOUS])
        assert rotating.verify_legacy(legacy(PREVIOUS, "msg-1")) == "msg-1"
        assert rotating.verify_legacy(legacy("another", "msg-1")) is None

    @pytest.mark.parametrize("message_id", ["", "-x", "a\x00b", "é", "x" * 65])
    def test_message_ids_that_no_worker_signs_are_refused(
        self, signer: SmsgidSigner, message_id: str
    ) -> None:
        mac = legacy(SECRET, message_id).rpartition(".")[2]
        assert signer.verify_legacy(f"{message_id}.{mac}") is None
