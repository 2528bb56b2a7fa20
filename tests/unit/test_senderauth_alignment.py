"""Relaxed DKIM alignment without a public suffix list."""

from __future__ import annotations

import pytest

from gateway.ingest.senderauth import is_aligned


@pytest.mark.parametrize(
    ("from_domain", "dkim_domain"),
    [
        ("example.org", "example.org"),
        ("mail.example.org", "example.org"),
        ("a.b.example.org", "example.org"),
        ("Example.ORG", "example.org"),
        ("example.org", "EXAMPLE.org."),
        ("cabinet.avocat.fr", "avocat.fr"),
    ],
)
def test_senderauth_aligned(from_domain: str, dkim_domain: str) -> None:
    assert is_aligned(from_domain, dkim_domain)


@pytest.mark.parametrize(
    ("from_domain", "dkim_domain"),
    [
        ("example.org", "other.org"),
        ("example.org", "mail.example.org"),  # parent From, child d=: not aligned
        ("badexample.org", "example.org"),  # suffix match must stop at a label
        ("example.org", "org"),  # a single label would vouch for a whole TLD
        ("example.fr", "fr"),
        ("example.org", ""),
        ("", "example.org"),
        ("example.org", ".org"),
        ("example.org", "example..org"),
    ],
)
def test_senderauth_not_aligned(from_domain: str, dkim_domain: str) -> None:
    assert not is_aligned(from_domain, dkim_domain)
