"""`python -m bench.stacks FILE.txt [PATTERN ...]`: where a py-spy raw profile spends its samples.

Reads py-spy's collapsed stacks (`--format raw`: one `frame;frame;... count`
line per distinct stack) and prints the share of samples whose stack holds a
frame matching each pattern (inclusive), then each stage of a message's way
(exclusive: a stack counts for the first stage of STAGES it matches), then
the top frames by self samples.  `--cpu MS` also turns the stage shares into
milliseconds of a measured CPU per message.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

DEFAULT_PATTERNS = [
    r"sqlalchemy", r"gateway/storage/groupcommit", r"email/", r"gateway/outbox/",
    r"dkim/", r"pysequoia|encrypt \(gateway/storage/crypto", r"gateway/ingest/mime",
    r"pikepdf|pdfcheck", r"aiosmtpd", r"aiosmtplib", r"asyncio/", r"prometheus",
    r"logging/", r"json/", r"sqlite3|execute \(sqlalchemy/engine/default",
]


STAGES = [
    ("outbox: compose and sign receipts", r"gateway/outbox/compose|compose_mail"),
    ("outbox: relay and record", r"gateway/outbox/|aiosmtplib"),
    ("group commit writer (rows, manifest, fsyncs)", r"gateway/storage/groupcommit"),
    ("sender checks (DKIM, From:)", r"gateway/ingest/senderauth|gateway/adapters/dkimpy|dkim/"),
    ("code, registration and duplicate reads",
     r"_look_up|sender_registered|active_for_measure|read_connection|RecipientPolicy"),
    ("documents (PDF checks)", r"pikepdf|pdfcheck|_check_documents"),
    ("encrypt and write blobs", r"write_payload|gateway/storage/payload|blobstore"),
    ("MIME parse", r"gateway/ingest/mime|email/"),
    ("rest of the pipeline", r"gateway/ingest/"),
    ("SMTP session (aiosmtpd, DATA, event loop)", r"aiosmtpd|gateway/smtp/|asyncio/"),
    ("other", r""),
]


def stage_shares(stacks: list[tuple[list[str], int]]) -> list[tuple[str, float]]:
    """Each stage's share of the samples, each stack counted once (first stage that matches)."""
    total = sum(count for _frames, count in stacks) or 1
    counts = dict.fromkeys((name for name, _ in STAGES), 0)
    compiled = [(name, re.compile(pattern)) for name, pattern in STAGES]
    for frames, count in stacks:
        for name, regex in compiled:
            if any(regex.search(frame) for frame in frames):
                counts[name] += count
                break
    return [(name, counts[name] / total) for name, _ in STAGES]


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if head and count.isdigit():
            stacks.append((head.split(";"), int(count)))
    return stacks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stacks",
        description="Where a py-spy raw profile (--format raw) spends its samples.",
    )
    parser.add_argument("file", type=Path, help="py-spy collapsed stacks (.txt)")
    parser.add_argument("patterns", nargs="*", help="regexes counted inclusively (default: a set)")
    parser.add_argument("--cpu", type=float, default=None,
                        help="a measured CPU ms per message: stage shares become ms")
    opts = parser.parse_intermixed_args(argv)
    if not opts.file.is_file():
        parser.error(f"no such profile: {opts.file}")
    cpu = opts.cpu
    stacks = load(opts.file)
    patterns = opts.patterns or DEFAULT_PATTERNS
    total = sum(count for _frames, count in stacks) or 1
    print(f"{total} samples")
    for pattern in patterns:
        regex = re.compile(pattern)
        hit = sum(count for frames, count in stacks if any(regex.search(f) for f in frames))
        print(f"  {100 * hit / total:5.1f} %  {pattern}")
    print("stages (exclusive):")
    for name, share in stage_shares(stacks):
        ms = f"  {share * cpu:5.1f} ms" if cpu is not None else ""
        print(f"  {100 * share:5.1f} %{ms}  {name}")
    own: Counter[str] = Counter()
    for frames, count in stacks:
        own[frames[-1]] += count
    print("top frames by own samples:")
    for frame, count in own.most_common(25):
        print(f"  {100 * count / total:5.1f} %  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
