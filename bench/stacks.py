"""`python -m bench.stacks FILE.txt [PATTERN ...]`: where a py-spy raw profile spends its samples.

Reads py-spy's collapsed stacks (`--format raw`: one `frame;frame;... count`
line per distinct stack) and prints the share of samples whose stack holds a
frame matching each pattern (inclusive), then the top frames by self samples.
"""

from __future__ import annotations

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


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if head and count.isdigit():
            stacks.append((head.split(";"), int(count)))
    return stacks


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    stacks = load(Path(args[0]))
    patterns = args[1:] or DEFAULT_PATTERNS
    total = sum(count for _frames, count in stacks) or 1
    print(f"{total} samples")
    for pattern in patterns:
        regex = re.compile(pattern)
        hit = sum(count for frames, count in stacks if any(regex.search(f) for f in frames))
        print(f"  {100 * hit / total:5.1f} %  {pattern}")
    own: Counter[str] = Counter()
    for frames, count in stacks:
        own[frames[-1]] += count
    print("top frames by own samples:")
    for frame, count in own.most_common(25):
        print(f"  {100 * count / total:5.1f} %  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
