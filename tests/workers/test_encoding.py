"""GSM-7 / UCS-2 detection and segment counting, checked at every boundary."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ics_sms.schemas.messages import Encoding
from ics_sms.workers.encoding import GSM7_BASIC, GSM7_EXTENSION, TextInfo, analyse, split

GSM = Encoding.GSM7
UCS = Encoding.UCS2
EMOJI = "\U0001f600"  # outside the BMP: a surrogate pair in UTF-16
CYR = "\u0439"  # a BMP character outside GSM-7


# -- a slow, obviously correct reference ---------------------------------------------------


def ref_encoding(text: str) -> Encoding:
    return GSM if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text) else UCS


def ref_weight(char: str, encoding: Encoding) -> int:
    if encoding is GSM:
        return 2 if char in GSM7_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1


def ref_units(text: str, encoding: Encoding) -> int:
    return sum(ref_weight(c, encoding) for c in text)


def ref_segments(text: str) -> int:
    encoding = ref_encoding(text)
    single, per_part = (160, 153) if encoding is GSM else (70, 67)
    if ref_units(text, encoding) <= single:
        return 1
    parts, used = 1, 0
    for char in text:
        weight = ref_weight(char, encoding)
        if used + weight > per_part:
            parts, used = parts + 1, 0
        used += weight
    return parts


# -- boundary tables -----------------------------------------------------------------------

BOUNDARIES = [
    pytest.param("", GSM, 1, 0, id="empty"),
    pytest.param(" ", GSM, 1, 1, id="one-space"),
    pytest.param("a" * 160, GSM, 1, 160, id="gsm-160"),
    pytest.param("a" * 161, GSM, 2, 161, id="gsm-161"),
    pytest.param("a" * 306, GSM, 2, 306, id="gsm-153x2"),
    pytest.param("a" * 307, GSM, 3, 307, id="gsm-153x2+1"),
    pytest.param("\u20ac" * 80, GSM, 1, 160, id="euro-x80-fills-one"),
    pytest.param("a" * 159 + "{", GSM, 2, 161, id="escape-tips-over-single"),
    pytest.param("a" * 151 + "[" + "a" * 153, GSM, 2, 306, id="escape-ends-part-exactly"),
    pytest.param("a" * 152 + "]" + "a" * 152, GSM, 3, 306, id="escape-straddles-153"),
    pytest.param("\n\r@\u00a3$\u00a5\u00c7\u03a9\u00df\u00e0\u00a7\u00bf", GSM, 1, 12,
                 id="basic-table-specials"),
    pytest.param("\f^{}\\[~]|\u20ac", GSM, 1, 20, id="every-extension-char"),
    pytest.param("`", UCS, 1, 1, id="backtick-is-not-gsm"),
    pytest.param("tab\there", UCS, 1, 8, id="tab-is-not-gsm"),
    pytest.param("\x1b", UCS, 1, 1, id="bare-escape-is-not-gsm"),
    pytest.param("\u00e7a va", UCS, 1, 5, id="lowercase-c-cedilla-is-not-gsm"),
    pytest.param("\u0928\u092e\u0938\u094d\u0924\u0947", UCS, 1, 6, id="hindi"),
    pytest.param(CYR * 70, UCS, 1, 70, id="ucs2-70"),
    pytest.param(CYR * 71, UCS, 2, 71, id="ucs2-71"),
    pytest.param(CYR * 134, UCS, 2, 134, id="ucs2-67x2"),
    pytest.param(CYR * 135, UCS, 3, 135, id="ucs2-67x2+1"),
    pytest.param(EMOJI * 35, UCS, 1, 70, id="emoji-x35-fills-one"),
    pytest.param(EMOJI * 35 + "a", UCS, 2, 71, id="emoji-tips-over-single"),
    pytest.param(CYR * 65 + EMOJI + CYR * 67, UCS, 2, 134, id="surrogate-ends-part-exactly"),
    pytest.param(CYR * 66 + EMOJI + CYR * 66, UCS, 3, 134, id="surrogate-straddles-67"),
    pytest.param("a" * 200 + "\u20ac", GSM, 2, 202, id="euro-keeps-gsm"),
    pytest.param("a" * 200 + CYR, UCS, 3, 201, id="one-foreign-char-makes-all-ucs2"),
]


@pytest.mark.parametrize(("text", "encoding", "segments", "units"), BOUNDARIES)
def test_analyse_boundaries(text: str, encoding: Encoding, segments: int, units: int) -> None:
    assert analyse(text) == TextInfo(encoding, segments, units)


@pytest.mark.parametrize(("text", "encoding", "segments", "units"), BOUNDARIES)
def test_split_agrees_with_analyse(
    text: str, encoding: Encoding, segments: int, units: int
) -> None:
    parts = split(text)
    assert "".join(parts) == text
    assert len(parts) == segments


def test_escape_pair_moves_whole_to_the_next_part() -> None:
    first, second, third = split("a" * 152 + "]" + "a" * 152)
    assert first == "a" * 152
    assert second == "]" + "a" * 151
    assert third == "a"


def test_surrogate_pair_moves_whole_to_the_next_part() -> None:
    first, second, third = split(CYR * 66 + EMOJI + CYR * 66)
    assert first == CYR * 66
    assert second == EMOJI + CYR * 65
    assert third == CYR


def test_a_pair_of_lone_surrogate_code_points_is_kept_together_and_intact() -> None:
    text = "\ud83d\ude00" * 67  # code points a bad decoder may leave in a str
    parts = split(text)
    assert "".join(parts) == text
    assert [len(p) for p in parts] == [66, 66, 2]
    assert analyse(text) == TextInfo(UCS, 3, 134)


def test_basic_and_extension_tables_have_their_3gpp_sizes() -> None:
    assert len(GSM7_BASIC) == 127
    assert len(GSM7_EXTENSION) == 10
    assert not GSM7_BASIC & GSM7_EXTENSION


def test_every_basic_char_is_one_septet_and_every_extension_char_two() -> None:
    for char in GSM7_BASIC:
        assert analyse(char) == TextInfo(GSM, 1, 1), repr(char)
    for char in GSM7_EXTENSION:
        assert analyse(char) == TextInfo(GSM, 1, 2), repr(char)


# -- properties ----------------------------------------------------------------------------

_MIXED = st.sampled_from(
    sorted(GSM7_BASIC) + sorted(GSM7_EXTENSION) + [CYR, EMOJI, "\u0928", "`", "\U0001f44d"]
)
TEXTS = st.one_of(
    st.text(alphabet=st.sampled_from(sorted(GSM7_BASIC | GSM7_EXTENSION)), max_size=500),
    st.text(alphabet=_MIXED, max_size=400),
    st.text(max_size=300),
)


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_split_parts_rejoin_and_each_fits(text: str) -> None:
    info = analyse(text)
    parts = split(text)
    assert "".join(parts) == text
    assert len(parts) == info.segments
    limit = (160 if info.encoding is GSM else 70) if len(parts) == 1 else (
        153 if info.encoding is GSM else 67
    )
    for part in parts:
        assert ref_units(part, info.encoding) <= limit
        assert part or text == ""


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_analyse_matches_the_reference(text: str) -> None:
    encoding = ref_encoding(text)
    assert analyse(text) == TextInfo(encoding, ref_segments(text), ref_units(text, encoding))
