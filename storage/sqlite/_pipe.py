"""The pipe between the SQLite writer process and its parent: frame kinds and framing.

A frame is its length (``_HEADER`` bytes, little-endian, counting the kind
byte), one kind byte, then the body. The parent (``_process.py``) sends
PLAN, APPLY and RESUME frames; the child (``_child.py``) answers OK, STALE,
FAILED or APPLIED. Both ends import this module and nothing of each other.
"""

from __future__ import annotations

PLAN, APPLY, RESUME = b"P", b"A", b"R"
OK, STALE, FAILED, APPLIED = b"o", b"s", b"f", b"a"
_HEADER = 4


def _frame(kind: bytes, body: bytes) -> bytes:
    return (len(body) + 1).to_bytes(_HEADER, "little") + kind + body
