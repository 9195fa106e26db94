"""Bearer tokens with roles. Tokens are configured and stored only as sha256 hashes.

An operator makes a token (any long random string), hashes it with `cj-svc hash-token`, and sets
`CJ_SVC_TOKENS="<sha256>:admin+user,<sha256>:user"`. Clients send `authorization: Bearer <token>`.
When tokens are configured every RPC needs a valid one, and services may require a role.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mesh_server import errors

METADATA_KEY = "authorization"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    token_hash: str
    roles: frozenset[str]


@dataclass(frozen=True)
class Authorizer:
    roles_by_hash: Mapping[str, frozenset[str]]
    # full service name -> role required to call it
    required_roles: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str, required_roles: Mapping[str, str] | None = None) -> Authorizer | None:
        """`hash:role+role,hash:role`; None (no authentication) when the spec is empty."""
        table: dict[str, frozenset[str]] = {}
        for entry in filter(None, (part.strip() for part in spec.split(","))):
            token_hash, _, roles = entry.partition(":")
            if len(token_hash) != 64 or any(c not in "0123456789abcdef" for c in token_hash):
                raise ValueError(f"token entry {entry[:12]}...: expected '<sha256 hex>:<role>+<role>'")
            table[token_hash] = frozenset(filter(None, roles.split("+")))
        return cls(table, dict(required_roles or {})) if table else None

    def authorize(self, service: str, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        header = next((v for k, v in metadata or () if k == METADATA_KEY and isinstance(v, str)), None)
        if header is None or not header.startswith("Bearer "):
            raise errors.Unauthenticated("missing bearer token; send metadata 'authorization: Bearer <token>'")
        presented = hash_token(header.removeprefix("Bearer ").strip())
        match = next((h for h in self.roles_by_hash if hmac.compare_digest(h, presented)), None)
        if match is None:
            raise errors.Unauthenticated("the bearer token is not valid here; check the token you send")
        principal = Principal(match, self.roles_by_hash[match])
        role = self.required_roles.get(service)
        if role is not None and role not in principal.roles:
            raise errors.PermissionDenied(f"{service} needs the '{role}' role, which this token does not have")
        return principal
