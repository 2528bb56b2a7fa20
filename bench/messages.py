"""DKIM-signed message templates: one PDF-like document, sized to a target total."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from bench.client import PLACEHOLDER
from tests.fixtures.dkimkeys import DkimKey, sign

SIZES: dict[str, int] = {"5KB": 5_000, "100KB": 100_000, "1MB": 1_000_000, "25MB": 25_000_000}
# The Message-ID is left out of the signature so the client can make every message unique.
SIGNED_HEADERS = (b"from", b"to", b"subject", b"date")


def pdf_like(size: int, seed: int = 7) -> bytes:
    """A PDF-shaped blob of `size` bytes with an incompressible stream (as scans are)."""
    head = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<</Length 0>>stream\n"
    tail = b"\nendstream\nendobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    body = random.Random(seed).randbytes(max(size - len(head) - len(tail), 0))
    return head + body + tail


def build(
    pdf_size: int, *, sender: str, to: str, domain: str, selector: str, key: DkimKey,
    subject: str = "Depot de pieces (banc d'essai)",
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<{PLACEHOLDER.decode()}@{domain}>"
    msg.set_content("Bonjour,\n\nVeuillez trouver ci-joint la piece.\n")
    msg.add_attachment(
        pdf_like(pdf_size), maintype="application", subtype="pdf", filename="piece.pdf"
    )
    raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    return sign(raw, selector.encode(), domain.encode(), key.private_pem, SIGNED_HEADERS)


def write_templates(
    folder: Path, labels: list[str], *, sender: str, to: str, domain: str, selector: str,
    key: DkimKey, subject: str = "Depot de pieces (banc d'essai)", prefix: str = "",
) -> dict[str, Path]:
    """One signed template per size label, within ~1 % of the target total size."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for label in labels:
        target = SIZES[label]
        pdf_size = max(int(target * 0.72), 200)
        for _ in range(3):  # base64 and header overhead: correct the guess twice
            raw = build(pdf_size, sender=sender, to=to, domain=domain, selector=selector,
                        key=key, subject=subject)
            pdf_size = max(pdf_size + int((target - len(raw)) * 0.74), 200)
        path = folder / f"{prefix}{label}.eml"
        path.write_bytes(raw)
        out[label] = path
    return out
