"""Link rewriting for self-tracked senders."""

from __future__ import annotations

import pytest

from ics_sms.workers.links import CODE_LENGTH, find_urls, link_code, rewrite_links

SECRET = b"secret"
BASE = "https://t.example.in"


@pytest.mark.parametrize(("text", "urls"), [
    ("Sale! https://shop.example/sale.", ["https://shop.example/sale"]),
    ("(see https://a.example/x)", ["https://a.example/x"]),
    ("wiki https://en.example/Foo_(bar) ok", ["https://en.example/Foo_(bar)"]),
    ("two: http://a.example/1, https://b.example/2?x=1&y=2!",
     ["http://a.example/1", "https://b.example/2?x=1&y=2"]),
    ("«https://a.example/q»", ["https://a.example/q"]),
    ("no links here, just http:// and text", []),
    ("HTTPS://UPPER.example/P", ["HTTPS://UPPER.example/P"]),
])
def test_finds_links_without_surrounding_punctuation(text: str, urls: list[str]) -> None:
    assert [u for _, _, u in find_urls(text)] == urls


def test_rewrites_every_link_and_keeps_the_rest_of_the_text() -> None:
    text = "नमस्ते! Offer: https://shop.example/a, more at https://shop.example/b."
    result = rewrite_links(text, "m1", SECRET, BASE)
    assert set(result.links.values()) == {"https://shop.example/a", "https://shop.example/b"}
    for code in result.links:
        assert len(code) == CODE_LENGTH
        assert f"{BASE}/l/{code}" in result.text
    assert result.text.startswith("नमस्ते! Offer: ") and result.text.endswith(".")
    assert "shop.example" not in result.text


def test_the_same_url_twice_gets_one_code() -> None:
    result = rewrite_links("a https://x.example b https://x.example", "m1", SECRET, BASE)
    assert len(result.links) == 1
    [code] = result.links
    assert result.text.count(code) == 2


def test_codes_are_per_message_stable_and_keyed() -> None:
    url = "https://x.example"
    assert link_code(SECRET, "m1", url) == link_code(SECRET, "m1", url)
    assert link_code(SECRET, "m1", url) != link_code(SECRET, "m2", url)
    assert link_code(SECRET, "m1", url) != link_code(b"other", "m1", url)


def test_text_without_links_is_untouched() -> None:
    result = rewrite_links("Your OTP is 1234", "m1", SECRET, BASE)
    assert result.text == "Your OTP is 1234" and result.links == {}
