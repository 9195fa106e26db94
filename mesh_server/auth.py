"""Bearer tokens with roles. Tokens are configured and stored only as sha256 hashes.

An operator makes a token (any long random string), hashes it with `cj-svc hash-token`, and sets
`CJ_SVC_TOKENS="<sha256>:admin+user:alice,<sha256>:user"` (roles, then optionally the user the token
belongs to). Clients send `authorization: Bearer <token>`. When tokens are configured every RPC needs
a valid one, and services may require a role. Under mutual TLS the client certificate's subject is
part of the caller's identity too, and names the user when no token does.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from mesh_server import errors

METADATA_KEY = "authorization"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: from the bearer token, the client certificate, or both."""

    token_hash: str = ""
    roles: frozenset[str] = frozenset()
    user_id: str = ""
    subject: str = ""  # the verified client certificate's subject, under mutual TLS


@dataclass(frozen=True)
class Authorizer:
    principals: Mapping[str, Principal]  # by token hash
    # full service name -> role required to call it
    required_roles: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str, required_roles: Mapping[str, str] | None = None) -> Authorizer | None:
        """`hash:role+role[:user],hash:role`; None (no authentication) when the spec is empty."""
        table: dict[str, Principal] = {}
        for entry in filter(None, (part.strip() for part in spec.split(","))):
            token_hash, _, rest = entry.partition(":")
            roles, _, user_id = rest.partition(":")
            if len(token_hash) != 64 or any(c not in "0123456789abcdef" for c in token_hash):
                raise ValueError(f"token entry {entry[:12]}...: expected '<sha256 hex>:<role>+<role>[:<user id>]'")
            if len(user_id) > 100:
                raise ValueError(f"token entry {token_hash[:12]}...: the user id is longer than 100 characters")
            table[token_hash] = Principal(
                token_hash, frozenset(filter(None, roles.split("+"))), user_id or f"token-{token_hash[:12]}"
            )
        return cls(table, dict(required_roles or {})) if table else None

    def authorize(self, service: str, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        """The caller of `service`, or Unauthenticated / PermissionDenied saying what is wrong."""
        header = next((v for k, v in metadata or () if k == METADATA_KEY and isinstance(v, str)), None)
        if header is None or not header.startswith("Bearer "):
            raise errors.Unauthenticated("missing bearer token; send metadata 'authorization: Bearer <token>'")
        presented = hash_token(header.removeprefix("Bearer ").strip())
        match = next((h for h in self.principals if hmac.compare_digest(h, presented)), None)
        if match is None:
            raise errors.Unauthenticated("the bearer token is not valid here; check the token you send")
        principal = self.principals[match]
        role = self.required_roles.get(service)
        if role is not None and role not in principal.roles:
            raise errors.PermissionDenied(f"{service} needs the '{role}' role, which this token does not have")
        return principal


def identify(
    authorizer: Authorizer | None, service: str, metadata: Sequence[tuple[str, str | bytes]] | None, subject: str
) -> Principal | None:
    """The caller: checked against the tokens when there are any; else known by its client
    certificate under mutual TLS; else anonymous (None)."""
    if authorizer is not None:
        return replace(authorizer.authorize(service, metadata), subject=subject)
    return Principal(user_id=subject, subject=subject) if subject else None
