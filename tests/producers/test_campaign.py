"""Campaign files: CSV and JSON Lines parsing, defaults, stable ids, row and file errors."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ics_sms.producers.campaign import (
    CampaignDefaults,
    CampaignFileError,
    CampaignFormat,
    Row,
    check_campaign,
    derive_message_id,
    detect_format,
    read_campaign,
    valid_requests,
)
from ics_sms.schemas.smsgid import SmsgidSigner

IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")
NUMBER = "+919812345678"
SECRET = "s" * 32


def derived(campaign: str, line: int) -> re.Pattern[str]:
    """The shape of a derived id: ``<campaign>-<16 hex digits>-<line>``."""
    return re.compile(rf"{re.escape(campaign)}-[0-9a-f]{{16}}-{line}")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def rows(path: Path, **defaults: str) -> list[Row]:
    return list(read_campaign(path, defaults=CampaignDefaults(**defaults)))


# -- CSV -----------------------------------------------------------------------------------
def test_csv_with_defaults_and_derived_ids(tmp_path: Path) -> None:
    path = write(tmp_path / "spring.csv",
                 f"to,text,sender\n{NUMBER},Hello,acme-promo\n+91 98123 45679,,\n")

    first, second = rows(path, campaign_id="spring", text="Default text", sender="acme-otp",
                         dlt_template_id="1207161234567890")

    assert first.line == 2 and first.request is not None
    assert derived("spring", 2).fullmatch(first.request.message_id)
    assert first.request.text == "Hello" and first.request.sender == "acme-promo"
    assert first.request.dlt_template_id == "1207161234567890"
    assert second.request is not None
    assert derived("spring", 3).fullmatch(second.request.message_id)
    assert second.request.to == "+919812345679"
    assert second.request.text == "Default text"  # an empty cell is a missing value
    assert second.request.sender == "acme-otp"


def test_csv_columns_override_defaults_and_carry_every_field(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv",
                 "message_id,campaign_id,to,text,dlt_template_id,expires_at\n"
                 f"m-1,autumn,{NUMBER},Hi,1207,2030-01-01T10:00:00+05:30\n")

    [row] = rows(path, campaign_id="spring", dlt_template_id="99")

    assert row.request is not None
    assert (row.request.message_id, row.request.campaign_id) == ("m-1", "autumn")
    assert row.request.dlt_template_id == "1207"
    assert row.request.expires_at is not None and row.request.expires_at.year == 2030


def test_csv_metadata_json_and_dotted_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv",
                 'to,text,metadata,metadata.customer,metadata.tier\n'
                 f'{NUMBER},Hi,"{{""customer"": 1, ""n"": [1, 2]}}",c-7,\n')

    [row] = rows(path, campaign_id="spring")

    assert row.request is not None
    assert row.request.metadata == {"customer": "c-7", "n": [1, 2]}


def test_csv_record_spanning_lines_keeps_physical_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv",
                 f'to,text\n{NUMBER},"two\nlines"\n\n,,\n{NUMBER},third\n')

    first, second = rows(path, campaign_id="c")

    assert (first.line, second.line) == (2, 6)  # blank and all-empty records are skipped
    assert first.request is not None and first.request.text == "two\nlines"
    assert second.request is not None and derived("c", 6).fullmatch(second.request.message_id)


def test_csv_byte_order_mark_and_spaces_in_header(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(f"\ufeff to , text \n{NUMBER},Hi\n".encode())

    [row] = rows(path, campaign_id="c")

    assert row.request is not None and row.request.text == "Hi"


def test_invalid_rows_name_line_field_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv",
                 f"to,text,metadata\n12345,Hi,\n{NUMBER},   ,\n{NUMBER},Hi,[1]\n{NUMBER},Hi\n"
                 f"{NUMBER},Hi,{{}}\n")

    found = rows(path, campaign_id="c")

    problems = [line for row in found for line in row.describe(path)]
    assert problems[0].startswith(f"{path}:2: to: ")
    assert problems[1] == f"{path}:3: text: must not be empty or only white space"
    assert problems[2] == f"{path}:4: metadata: must be a JSON object"
    assert problems[3] == f"{path}:5: 2 fields where the header has 3"
    assert found[-1].request is not None


def test_check_caps_the_listed_rows_and_counts_senders(tmp_path: Path) -> None:
    lines = [f"bad-{i},Hi," for i in range(30)] + [f"{NUMBER},Hi,acme", f"{NUMBER},Hi,"]
    path = write(tmp_path / "c.csv", "to,text,sender\n" + "\n".join(lines) + "\n")

    check = check_campaign(path, defaults=CampaignDefaults(campaign_id="c"),
                           max_rows_listed=20)

    assert (check.rows, check.valid, check.invalid) == (32, 2, 30)
    assert len(check.problems) == 20 and check.unlisted == 10
    assert check.problems[0].startswith(f"{path}:2: to: ")
    assert check.senders == {"acme": 1, None: 1}


# -- JSON Lines ----------------------------------------------------------------------------
def test_jsonl_with_defaults_nulls_and_blank_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"to": NUMBER, "text": "Hi", "metadata": {"k": 1}}),
        "",
        json.dumps({"message_id": "own-id", "to": NUMBER, "sender": None, "campaign_id": "x"}),
        "[1, 2]",
        "{not json",
        json.dumps({"to": NUMBER, "sendr": "acme-promo", "schema_version": 1}),
    ]
    path = write(tmp_path / "c.jsonl", "\n".join(lines) + "\n")

    first, second, array, broken, typo = rows(path, campaign_id="spring", sender="acme",
                                              text="Default")

    assert first.request is not None and derived("spring", 1).fullmatch(first.request.message_id)
    assert first.request.metadata == {"k": 1} and first.request.sender == "acme"
    assert second.line == 3 and second.request is not None
    assert second.request.message_id == "own-id" and second.request.campaign_id == "x"
    assert second.request.sender == "acme" and second.request.text == "Default"
    assert array.describe(path) == [f"{path}:4: expected a JSON object, found an array"]
    assert broken.describe(path)[0].startswith(f"{path}:5: not valid JSON: ")
    assert typo.describe(path) == [f"{path}:6: sendr: unknown field"]


def test_format_from_extension_or_given(tmp_path: Path) -> None:
    assert detect_format(Path("a.CSV")) is CampaignFormat.CSV
    assert detect_format(Path("a.ndjson")) is CampaignFormat.JSONL
    assert detect_format(Path("a.txt"), "jsonl") is CampaignFormat.JSONL
    with pytest.raises(CampaignFileError, match="cannot tell the format"):
        detect_format(Path("a.txt"))
    path = write(tmp_path / "c.txt", json.dumps({"to": NUMBER, "text": "Hi"}) + "\n")
    [row] = read_campaign(path, "jsonl", CampaignDefaults(campaign_id="c"))
    assert row.request is not None


# -- derived ids: stable for a file, unique across files and campaigns -------------------
def ids_of(path: Path, **defaults: str) -> list[str]:
    found = valid_requests(read_campaign(path, defaults=CampaignDefaults(**defaults)))
    return [request.message_id for request in found]


def test_ids_are_the_same_on_every_run(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "to,text\n" + f"{NUMBER},Hi\n" * 50)

    first = ids_of(path, campaign_id="c")

    assert first == ids_of(path, campaign_id="c") == ids_of(path, campaign_id="c")
    assert len(set(first)) == 50  # the same row on 50 lines is 50 messages
    assert all(derived("c", line).fullmatch(id_) for line, id_ in enumerate(first, start=2))


def test_two_files_of_one_campaign_share_no_id_nor_smsgid(tmp_path: Path) -> None:
    one = write(tmp_path / "one.csv", "to,text\n+919812345670,Hi\n+919812345671,Hi\n")
    two = write(tmp_path / "two.csv", "to,text\n+919812345672,Hi\n+919812345673,Hi\n")
    signer = SmsgidSigner(SECRET)

    first, second = ids_of(one, campaign_id="spring"), ids_of(two, campaign_id="spring")

    assert len(set(first + second)) == 4  # the same lines, other recipients: other ids
    assert len({signer.sign(id_, "acme-otp") for id_ in first + second}) == 4


def test_one_file_under_two_campaigns_shares_no_id(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "to,text\n" + f"{NUMBER},Hi\n" * 3)

    lower, upper = ids_of(path, campaign_id="spring"), ids_of(path, campaign_id="Spring")

    assert not set(lower) & set(upper)
    assert not {i.lower() for i in lower} & {i.lower() for i in upper}  # not even in case


def test_editing_a_row_in_place_changes_that_rows_id_only(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "to,text\n" + f"{NUMBER},Hi\n" * 3)
    before = ids_of(path, campaign_id="c")
    write(path, f"to,text\n{NUMBER},Hi\n{NUMBER},Hello\n{NUMBER},Hi\n{NUMBER},New\n")

    after = ids_of(path, campaign_id="c")

    assert after[0] == before[0] and after[2] == before[2]  # not sent again
    assert after[1] != before[1]  # a new message
    assert derived("c", 5).fullmatch(after[3])  # an appended row


def test_every_field_and_default_the_row_uses_is_part_of_its_id(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv",
                 f"to,text,sender\n{NUMBER},Hi,\n{NUMBER},Hi,acme-promo\n")

    otp = ids_of(path, campaign_id="c", sender="acme-otp")
    other = ids_of(path, campaign_id="c", sender="acme-other")

    assert otp[0] != other[0]  # the default sender is part of the message
    assert otp[1] == other[1]  # a row naming its sender does not use the default


def test_a_null_field_derives_the_same_id_as_a_missing_one(tmp_path: Path) -> None:
    missing = write(tmp_path / "a.jsonl", json.dumps({"to": NUMBER, "text": "Hi"}) + "\n")
    null = write(tmp_path / "b.jsonl", json.dumps(
        {"to": NUMBER, "text": "Hi", "message_id": None, "sender": None, "metadata": None}
    ) + "\n")

    assert ids_of(missing, campaign_id="c") == ids_of(null, campaign_id="c")


def test_campaign_ids_that_are_not_identifiers_give_a_readable_slug() -> None:
    fields = {"to": NUMBER, "text": "Hi"}
    weird = derive_message_id("Diwali Sale / 2024 — Tier A", 7, fields)
    long = derive_message_id("x" * 128, 1_000_000, fields)

    assert weird == derive_message_id("Diwali Sale / 2024 — Tier A", 7, fields)
    assert derived("diwali-sale-2024-tier-a", 7).fullmatch(weird)
    assert weird != derive_message_id("Diwali Sale / 2024 — Tier B", 7, fields)
    assert len(long) <= 64 and IDENTIFIER.match(long)


@given(st.text(min_size=1, max_size=128), st.integers(min_value=1, max_value=10**12),
       st.dictionaries(st.sampled_from(["to", "text", "sender"]), st.text(max_size=30)))
def test_derived_ids_are_always_lower_case_identifiers(campaign_id: str, line: int,
                                                       fields: dict[str, str]) -> None:
    message_id = derive_message_id(campaign_id, line, fields)
    assert len(message_id) <= 64 and IDENTIFIER.match(message_id)
    assert message_id == message_id.lower() and message_id.endswith(f"-{line}")


ROWS = st.lists(st.tuples(st.sampled_from(["+919812345670", "+919812345671"]),
                          st.sampled_from(["Hi", "Sale"])), min_size=1, max_size=6)


@given(st.lists(st.tuples(st.sampled_from(["spring", "Spring", "autumn"]), ROWS),
                min_size=2, max_size=4))
def test_rows_share_an_id_only_when_campaign_line_and_content_agree(
        files: list[tuple[str, list[tuple[str, str]]]]) -> None:
    """Whatever files are published under whatever campaigns: two rows get one message id
    (one smsgid) only when they are the same message on the same line; never two
    recipients, two texts or two campaigns."""
    seen: dict[str, tuple[str, int, str, str]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for number, (campaign, content) in enumerate(files):
            path = write(Path(folder) / f"{number}.csv",
                         "to,text\n" + "".join(f"{to},{text}\n" for to, text in content))
            for row in read_campaign(path, defaults=CampaignDefaults(campaign_id=campaign)):
                assert row.request is not None
                message = (campaign, row.line, row.request.to, row.request.text)
                assert seen.setdefault(row.request.message_id, message) == message


# -- message ids given in the file ---------------------------------------------------------
def test_a_repeated_message_id_is_an_error_on_every_later_row(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv",
                 f"message_id,to,text\nm-1,{NUMBER},Hi\nm-2,{NUMBER},Hi\nm-1,{NUMBER},Hi\n"
                 f"m-1,12345,Hi\nM-1,{NUMBER},Hi\n")

    found = rows(path, campaign_id="c")

    assert [r.message_id for r in valid_requests(found)] == ["m-1", "m-2", "M-1"]
    assert found[2].describe(path) == [f"{path}:4: message_id: duplicate of line 2"]
    problems = found[3].describe(path)
    assert problems[0] == f"{path}:5: message_id: duplicate of line 2"
    assert problems[1].startswith(f"{path}:5: to: ")


def test_a_repeated_message_id_in_json_lines_and_in_the_check(tmp_path: Path) -> None:
    line = json.dumps({"message_id": "own", "to": NUMBER, "text": "Hi"}) + "\n"
    path = write(tmp_path / "c.jsonl", line + "\n" + line + line)

    check = check_campaign(path, defaults=CampaignDefaults(campaign_id="c"))

    assert (check.rows, check.valid, check.invalid) == (3, 1, 2)
    assert check.problems == [f"{path}:3: message_id: duplicate of line 1",
                              f"{path}:4: message_id: duplicate of line 1"]


def test_the_first_row_with_an_id_owns_it_even_when_invalid(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", f"message_id,to,text\nm-1,12345,Hi\nm-1,{NUMBER},Hi\n")

    first, second = rows(path, campaign_id="c")

    assert first.request is None and second.request is None
    assert second.problems == ("message_id: duplicate of line 2",)


# -- files that cannot be used at all ------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("empty.csv", b"", "empty file: expected a header row"),
        ("nohead.csv", b"phone,message\n+919812345678,Hi\n", "unknown column(s) 'phone', "),
        ("notext.csv", b"to\n+919812345678\n", "the header has no column(s) text"),
        ("twice.csv", b"to,text,to\n", "the header repeats column(s) to"),
        ("latin1.csv", "to,text\n+919812345678,caf\u00e9\n".encode("latin-1"),
         "latin1.csv:2: not UTF-8 text"),
        ("quote.csv", b'to,text\n+919812345678,"open\n', "not valid CSV"),
        ("latin1.jsonl", '{"text": "\u00e9"}\n'.encode("latin-1"), "latin1.jsonl:1: not UTF-8"),
    ],
)
def test_unusable_files_are_one_line_errors(tmp_path: Path, name: str, content: bytes,
                                            error: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CampaignFileError) as caught:
        check_campaign(path, defaults=CampaignDefaults(campaign_id="c"))
    assert error in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CampaignFileError, match="no such file"):
        check_campaign(tmp_path / "missing.csv")
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(CampaignFileError, match="is a directory"):
        check_campaign(folder)


def test_unnamed_empty_columns_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", f"to,text,,\n{NUMBER},Hi,,\n{NUMBER},Hi,,oops\n")

    ok, bad = rows(path, campaign_id="c")

    assert ok.request is not None
    assert bad.problems == ("a value ('oops') in a column without a name",)
