"""Webhook signatures (maintenance_guard.notify.signing)."""

from __future__ import annotations

from maintenance_guard.notify import sign, verify_signature

SECRET = "0123456789abcdef-secret"


def test_a_signature_verifies_only_with_its_secret_and_body() -> None:
    header = sign(SECRET, b'{"a":1}', timestamp=1_000)
    assert verify_signature(SECRET, header, b'{"a":1}', now=1_000)
    assert not verify_signature(SECRET, header, b'{"a":2}', now=1_000)
    assert not verify_signature("another-secret-of-16", header, b'{"a":1}', now=1_000)


def test_an_old_or_future_signature_is_refused() -> None:
    header = sign(SECRET, b"x", timestamp=1_000)
    assert verify_signature(SECRET, header, b"x", now=1_300)
    assert not verify_signature(SECRET, header, b"x", now=1_301)
    assert not verify_signature(SECRET, header, b"x", now=699)


def test_malformed_headers_are_refused() -> None:
    for header in (None, "", "t=abc,v1=00", "v1=00", "t=1000"):
        assert not verify_signature(SECRET, header, b"x", now=1_000)
