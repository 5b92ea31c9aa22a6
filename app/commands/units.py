"""Human-friendly quantities on the command line and in the app's forms (no heavy imports)."""

from __future__ import annotations

import re

from interp.store.errors import InputError


def parse_tokens(text: str) -> int:
    """``10M`` -> 10_000_000, ``500k`` -> 500_000, ``2e6`` -> 2_000_000."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMbB]?)\s*", text)
    if not match:
        raise InputError(f"cannot read a token count from '{text}'; write e.g. 10M, 500k or 2000000")
    return int(float(match.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}[match.group(2).lower()])
