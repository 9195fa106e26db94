"""Page tokens: opaque to clients, checked by the server (AIP-158).

A token names the list it belongs to and the position after which the next page starts. A token of
another list, or bytes that are no token at all, are refused with INVALID_ARGUMENT instead of
quietly answering an empty or a full page.
"""

from __future__ import annotations

import base64
import binascii

from mesh_server import errors


def next_token(listing: str, after: str) -> str:
    """The token of the page after `after` in `listing` ('' when there is no next page)."""
    if not after:
        return ""
    return base64.urlsafe_b64encode(f"{listing}\n{after}".encode()).decode().rstrip("=")


def position(listing: str, token: str) -> str:
    """Where the page of `token` starts in `listing` ('' for the first page)."""
    if not token:
        return ""
    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    name, newline, after = decoded.partition("\n")
    if not newline or name != listing or not after:
        raise errors.InvalidArgument(
            "page_token is not one this list handed out; send the next_page_token of the previous page "
            "of the same list, or none for the first page",
            field="page_token",
        )
    return after
