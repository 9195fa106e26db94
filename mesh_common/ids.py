"""The one id function used everywhere, and the shapes ids must have."""

from __future__ import annotations

import re
import uuid

STORAGE_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


def new_id() -> str:
    """A fresh id: 32 lowercase hex characters (uuid4().hex)."""
    return uuid.uuid4().hex
