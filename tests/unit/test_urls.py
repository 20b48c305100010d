"""Credentials never shown: `mask_url` and `redact` on every URL form the package accepts."""

from __future__ import annotations

import pytest

from maintenance_guard.urls import mask_url, redact


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:S3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://alice:S3cret@host/0", "redis://alice:***@host/0"),
        ("rediss://:S3cret@host:6380/1", "rediss://:***@host:6380/1"),
        ("redis://S3cret@host/0", "redis://***@host/0"),
        ("redis://:p%40ss@host/0", "redis://:***@host/0"),
        ("redis://:pa/ss@word@host/0", "redis://:***@host/0"),
        ("redis://host/0?password=S3cret&db=1", "redis://host/0?password=***&db=1"),
        ("redis://host/0?sentinel_password=S3cret", "redis://host/0?sentinel_password=***"),
        (
            "redis+sentinel://:S3cret@h1:26379,h2:26379/mymaster/0",
            "redis+sentinel://:***@h1:26379,h2:26379/mymaster/0",
        ),
        ("unix://:S3cret@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        ("unix:///run/redis.sock?db=2&password=S3cret", "unix:///run/redis.sock?db=2&password=***"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("unix:///tmp/x.sock?db=0", "unix:///tmp/x.sock?db=0"),
        ("redis//:S3cret@host", "redis//:***@host"),
        ("", ""),
    ],
)
def test_mask_url_replaces_passwords_and_keeps_the_rest(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "S3cret" not in mask_url(url)


def test_redact_removes_the_url_and_its_password_from_any_text() -> None:
    url = "redis://:S3cret@db.example:6379/0"
    text = f"cannot use {url!r}: auth S3cret refused by db.example"
    assert (
        redact(text, url)
        == "cannot use 'redis://:***@db.example:6379/0': auth *** refused by db.example"
    )
    assert redact("p%40ss or p@ss", "redis://:p%40ss@h/0") == "*** or ***"
    assert redact("nothing secret", None, "redis://h/0") == "nothing secret"
