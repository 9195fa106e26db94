"""Bearer tokens on the client side: where a token comes from, and the metadata that carries it."""

from __future__ import annotations

from pathlib import Path

AUTHORIZATION_KEY = "authorization"


def secret(value: str, file: str | None, option: str) -> str:
    """A secret given directly (flag or environment) or, better, in a file (first line, trimmed):
    a file keeps it out of `ps` and shell history. Both given is a mistake worth saying."""
    if not file:
        return value
    if value:
        raise ValueError(f"give {option} or {option}-file, not both")
    try:
        lines = Path(file).read_text().splitlines()
    except OSError as error:
        raise ValueError(f"{option}-file {file}: {error.strerror}") from None
    if not lines or not lines[0].strip():
        raise ValueError(f"{option}-file {file} is empty; put the token on its first line")
    return lines[0].strip()


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The metadata that presents `token` (none without one)."""
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),) if token else ()
