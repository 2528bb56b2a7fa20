"""DKIM-signed message templates: one PDF document, sized to a target total."""

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


_IMAGE_WIDTH = 1024


def pdf_like(size: int, seed: int = 7) -> bytes:
    """A valid one-page PDF of about `size` bytes: an incompressible grey image, as scans are.

    Valid, because the gateway parses every PDF it accepts (qpdf); the bytes
    short of a whole image row are a comment in the page's content stream.
    """
    rows = max(size - 700, 0) // _IMAGE_WIDTH or 1
    pixels = random.Random(seed).randbytes(rows * _IMAGE_WIDTH)
    draw = b"q 595 0 0 842 0 0 cm /Im0 Do Q\n%" + b"x" * max(size - 700 - len(pixels), 0)
    objects = [
        b"<</Type/Catalog/Pages 2 0 R>>",
        b"<</Type/Pages/Kids[3 0 R]/Count 1>>",
        b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]"
        b"/Resources<</XObject<</Im0 4 0 R>>>>/Contents 5 0 R>>",
        b"<</Type/XObject/Subtype/Image/Width %d/Height %d/ColorSpace/DeviceGray"
        b"/BitsPerComponent 8/Length %d>>stream\n" % (_IMAGE_WIDTH, rows, len(pixels))
        + pixels + b"\nendstream",
        b"<</Length %d>>stream\n" % len(draw) + draw + b"\nendstream",
    ]
    out, offsets = [b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"], []
    for number, body in enumerate(objects, start=1):
        offsets.append(sum(map(len, out)))
        out.append(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref_at = sum(map(len, out))
    out.append(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.extend(b"%010d 00000 n \n" % offset for offset in offsets)
    out.append(b"trailer<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n"
               % (len(objects) + 1, xref_at))
    return b"".join(out)


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
