"""Reasons and names: invisible characters are stripped before the empty and length rules."""

from __future__ import annotations

import pytest

from maintenance_guard import InvalidInput
from maintenance_guard.inputs import clean_actor, clean_note, clean_reason

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"


@pytest.mark.parametrize(
    "reason",
    [
        "\u200b\u200b\u200b",
        ZERO_WIDTH,
        BIDI,
        " \u202e \u2066 ",
        "\U000e0041\U000e0042",  # tag characters ("ASCII smuggling")
        "\u3164\u3164",  # Hangul fillers: letters that print as nothing
        "\u0301\u0301",  # combining marks with nothing to sit on
    ],
)
def test_reason_of_only_invisible_characters_is_empty_and_refused(reason: str) -> None:
    with pytest.raises(InvalidInput, match="must not be empty"):
        clean_reason(reason)
    assert clean_note(reason) == ""
    assert clean_actor(reason) == "unknown"


def test_bidi_and_zero_width_characters_are_stripped_from_a_reason() -> None:
    spoofed = "Back at 10:00\u202e00:21 ta kcab\u202c"
    assert clean_reason(spoofed) == "Back at 10:0000:21 ta kcab"
    assert clean_reason(f"DB{ZERO_WIDTH}upgrade{BIDI}") == "DBupgrade"
    assert clean_reason("caf\u0065\u0301 \u00e9 \u6f22\u5b57 \U0001f527") == (
        "caf\u0065\u0301 \u00e9 \u6f22\u5b57 \U0001f527"
    )


def test_length_rule_counts_the_text_after_invisible_characters_are_stripped() -> None:
    assert clean_reason("x" * 500 + "\u200b" * 100) == "x" * 500
    with pytest.raises(InvalidInput, match="at most 500"):
        clean_reason("x" * 501 + "\u200b")
