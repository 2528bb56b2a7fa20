"""`gateway receipts verify`: check a receipt offline, on the guardian's or the greffe's machine."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from gateway.cli.context import CliContext, pass_cli
from gateway.errors import GatewayError, InputError, ReceiptInvalid
from gateway.greffe.receipts import (
    MAX_KEY_BYTES,
    MAX_RECEIPT_BYTES,
    DocumentCheck,
    VerifiedReceipt,
    check_document,
    load_certificates,
    read_bounded,
    receipt_sender,
    summary,
    verify_receipt,
)
from gateway.outbox.compose import format_fingerprint
from gateway.outbox.receiptfacts import rfc3339


@click.group()
def receipts() -> None:
    """Receipts (accusés de réception): check them offline."""


@receipts.command("verify")
@click.argument("receipt", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The gateway's public key, armoured or binary (default: the local gateway's).",
)
@click.option(
    "--document",
    "documents",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A file to compare with the receipted documents (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@pass_cli
def receipts_verify(
    ctx: CliContext, receipt: Path, key_file: Path | None, documents: Sequence[Path],
    as_json: bool,
) -> None:  # fmt: skip
    """Check RECEIPT.eml's OpenPGP signature and print what it attests; exit 1 naming the fault.

    Needs no gateway: give the gateway's key with --key (from WKD, or from
    `gateway keys export`).  --document FILE says whether FILE is one of the
    documents receipted (same SHA-256 and size).
    """
    try:
        raw = read_bounded(receipt, MAX_RECEIPT_BYTES, "receipt")
        certs = load_certificates(_key_bytes(ctx, key_file, raw))
        verified = verify_receipt(raw, certs)
        checks = [check_document(verified, path) for path in documents]
    except GatewayError as exc:
        if as_json:
            _print_json({"valid": False, "reason": exc.message})
        raise
    unmatched = [check for check in checks if check.receipted is None]
    reason = _unmatched_reason(unmatched, len(verified.documents)) if unmatched else None
    if as_json:
        _print_json({**summary(verified, checks), **({"reason": reason} if reason else {})})
    else:
        _print_summary(verified, checks)
    if reason:
        raise ReceiptInvalid(reason)


def _key_bytes(ctx: CliContext, key_file: Path | None, raw: bytes) -> bytes:
    """The --key file, else the local gateway's public key, else a refusal saying how to get it."""
    if key_file is not None:
        return read_bounded(key_file, MAX_KEY_BYTES, "key file")
    if ctx.config_path.exists():
        public = ctx.settings.signing_pub_file
        if public.exists():
            return read_bounded(public, MAX_KEY_BYTES, "key file")
    sender = receipt_sender(raw) or "noreply@<gateway domain>"
    raise InputError(
        "no --key given and no local gateway key: get the gateway's key by WKD "
        f"(gpg --auto-key-locate clear,wkd --locate-keys {sender} && "
        f"gpg --export {sender} > gateway.asc) or from the greffe "
        "(gateway keys export > gateway.asc), then pass --key gateway.asc"
    )


def _unmatched_reason(unmatched: Sequence[DocumentCheck], receipted: int) -> str:
    names = ", ".join(str(check.path) for check in unmatched)
    return f"not among the {receipted} document(s) this receipt lists: {names}"


def _print_json(data: dict[str, Any]) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


def _print_summary(receipt: VerifiedReceipt, checks: Sequence[DocumentCheck]) -> None:
    facts = receipt.facts
    when = rfc3339(receipt.signed_at) if receipt.signed_at else "an unknown time"
    click.echo(
        f"receipt valid: signed by {format_fingerprint(receipt.signer_fingerprint)} at {when}"
    )
    rows = [
        ("issuer", facts["issuer"]),
        ("recipient", facts["recipient"]),
        ("court", facts["court"]),
        ("measure", facts["measure"]),
        ("request", facts["request_reference"]),
        ("submission", facts["submission_reference"]),
        ("received at", facts["received_at"]),
        ("message SHA-256", facts["message_sha256"]),
        ("documents", str(len(facts["documents"]))),
    ]
    for label, value in rows:
        click.echo(f"  {label + ':':<17}{_shown(value)}")
    for document in receipt.documents:
        click.echo(f"    {document.index}. {_shown(document.name)}")
        click.echo(f"       {document.size} bytes, SHA-256 {document.sha256}")
    for check in checks:
        if check.receipted is None:
            click.echo(f"document {check.path}: NOT receipted (SHA-256 {check.sha256})")
        else:
            click.echo(
                f"document {check.path}: receipted as document {check.receipted.index} "
                f"({_shown(check.receipted.name)})"
            )


def _shown(text: str) -> str:
    # Signed text still goes to a terminal: no escape sequences or line breaks from it.
    return "".join(c if c.isprintable() else "?" for c in text)


def register(cli: click.Group) -> None:
    cli.add_command(receipts)
