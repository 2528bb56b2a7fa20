"""Relaxed DKIM alignment by organisational domain, from the Public Suffix List (RFC 7489)."""

from __future__ import annotations

import pytest

from gateway.ingest.senderauth import is_aligned, organisational_domain


@pytest.mark.parametrize(
    ("from_domain", "dkim_domain"),
    [
        ("example.org", "example.org"),
        ("mail.example.org", "example.org"),
        ("a.b.example.org", "example.org"),
        ("Example.ORG", "example.org"),
        ("example.org", "EXAMPLE.org."),
        # RFC 7489 3.1.1: same organisational domain, whichever is the parent.
        ("example.org", "mail.example.org"),
        ("a.example.org", "b.example.org"),
        # Under a public suffix of several labels, the organisation is one label below it.
        ("justice.gouv.fr", "justice.gouv.fr"),
        ("greffe.justice.gouv.fr", "justice.gouv.fr"),
        ("cabinet-durand.avocat.fr", "cabinet-durand.avocat.fr"),
        ("alice.github.io", "alice.github.io"),
        ("www.example.co.uk", "example.co.uk"),
        ("exemple.fr", "mail.exemple.fr"),
        ("café.fr", "xn--caf-dma.fr"),  # IDNA: the same domain written both ways
    ],
)
def test_senderauth_aligned(from_domain: str, dkim_domain: str) -> None:
    assert is_aligned(from_domain, dkim_domain)


@pytest.mark.parametrize(
    ("from_domain", "dkim_domain"),
    [
        ("example.org", "other.org"),
        ("badexample.org", "example.org"),  # suffix match must stop at a label
        ("example.org", "org"),  # a single label would vouch for a whole TLD
        ("example.fr", "fr"),
        ("example.org", ""),
        ("", "example.org"),
        ("example.org", ".org"),
        ("example.org", "example..org"),
        # The attacks the two-label rule let through: a public suffix of two
        # labels (ICANN or private) vouches for nobody registered beneath it.
        ("justice.gouv.fr", "gouv.fr"),
        ("cabinet-durand.avocat.fr", "avocat.fr"),
        ("alice.github.io", "github.io"),
        ("alice.blogspot.com", "blogspot.com"),
        ("example.co.uk", "co.uk"),
        # Neighbours under a private suffix are different organisations.
        ("alice.github.io", "mallory.github.io"),
        ("alice.blogspot.com", "mallory.blogspot.com"),
        ("justice.gouv.fr", "interieur.gouv.fr"),
        # A From: domain that is itself a public suffix has no organisation.
        ("github.io", "github.io"),
        ("gouv.fr", "gouv.fr"),
    ],
)
def test_senderauth_not_aligned(from_domain: str, dkim_domain: str) -> None:
    assert not is_aligned(from_domain, dkim_domain)


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("mail.exemple.fr", "exemple.fr"),
        ("a.b.justice.gouv.fr", "justice.gouv.fr"),
        ("x.alice.github.io", "alice.github.io"),
        ("Mail.Example.ORG.", "example.org"),
        ("gouv.fr", None),
        ("github.io", None),
        ("fr", None),
        ("a..b.fr", None),
        ("", None),
    ],
)
def test_senderauth_organisational_domain(domain: str, expected: str | None) -> None:
    assert organisational_domain(domain) == expected
