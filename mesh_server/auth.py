"""Bearer tokens with roles. Tokens are configured and stored only as sha256 hashes.

An operator makes a token (any long random string), hashes it with `cj-svc hash-token`, and sets
`CJ_SVC_TOKENS="<sha256>:admin+user:alice:school-7,<sha256>:user"` (roles, then optionally the user
and the organisation the token belongs to). Clients send `authorization: Bearer <token>`. When tokens
are configured every RPC needs a valid one, services may require a role, and what a caller may see is
limited to its own (see `Principal.isolated`). Under mutual TLS the client certificate's subject is
part of the caller's identity too, and names the user when no token does.

Roles: `user` (its own batches and content), `admin` (everything, and the AdminService), `auditor`
(reads everything, changes nothing of others), `service` (a service reading content for others: the
CJ Service's token at the Content Service; it may name the user it acts for, see ON_BEHALF_OF_*).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import grpc

from mesh_common.tokens import AUTHORIZATION_KEY
from mesh_server import errors

# A caller with the `service` role names the user (and organisation) it acts for: what that user may
# not see, the service is not shown either.
ON_BEHALF_OF_USER = "huleedu-on-behalf-of-user"
ON_BEHALF_OF_ORG = "huleedu-on-behalf-of-org"
SEES_ALL_ROLES = frozenset({"admin", "auditor", "service"})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: from the bearer token, the client certificate, or both."""

    token_hash: str = ""
    roles: frozenset[str] = frozenset()
    user_id: str = ""
    subject: str = ""  # the verified client certificate's subject, under mutual TLS
    org_id: str = ""

    @property
    def isolated(self) -> bool:
        """Whether this caller sees only its own: token holders do, unless their role sees all.
        Without tokens (certificates only, or nobody) the mesh is open, as the README says."""
        return bool(self.token_hash) and not (self.roles & SEES_ALL_ROLES)


def owner_of(principal: Principal | None) -> str:
    """The key a caller's batches and request ids are filed under: its user when it has a token,
    '' on an open mesh."""
    return principal.user_id if principal is not None and principal.token_hash else ""


@dataclass(frozen=True)
class Authorizer:
    principals: Mapping[str, Principal]  # by token hash
    # full service name -> role required to call it
    required_roles: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str, required_roles: Mapping[str, str] | None = None) -> Authorizer | None:
        """`hash:role+role[:user[:org]],hash:role`; None (no authentication) when the spec is empty."""
        table: dict[str, Principal] = {}
        for entry in filter(None, (part.strip() for part in spec.split(","))):
            token_hash, _, rest = entry.partition(":")
            roles, _, rest = rest.partition(":")
            user_id, _, org_id = rest.partition(":")
            if len(token_hash) != 64 or any(c not in "0123456789abcdef" for c in token_hash):
                raise ValueError(
                    f"token entry {entry[:12]}...: expected '<sha256 hex>:<role>+<role>[:<user id>[:<org id>]]'"
                )
            if len(user_id) > 100 or len(org_id) > 100:
                raise ValueError(f"token entry {token_hash[:12]}...: a user or org id is longer than 100 characters")
            table[token_hash] = Principal(
                token_hash,
                frozenset(filter(None, roles.split("+"))),
                user_id or f"token-{token_hash[:12]}",
                org_id=org_id,
            )
        return cls(table, dict(required_roles or {})) if table else None

    def authorize(self, service: str, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        """The caller of `service`, or Unauthenticated / PermissionDenied saying what is wrong."""
        header = next((v for k, v in metadata or () if k == AUTHORIZATION_KEY and isinstance(v, str)), None)
        scheme, _, token = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():  # the scheme is case-insensitive (RFC 9110)
            raise errors.Unauthenticated("missing bearer token; send metadata 'authorization: Bearer <token>'")
        presented = hash_token(token.strip())
        match = next((h for h in self.principals if hmac.compare_digest(h, presented)), None)
        if match is None:
            raise errors.Unauthenticated("the bearer token is not valid here; check the token you send")
        principal = self.principals[match]
        role = self.required_roles.get(service)
        if role is not None and role not in principal.roles:
            raise errors.PermissionDenied(f"{service} needs the '{role}' role, which this token does not have")
        return principal


def on_behalf_of(principal: Principal | None, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal | None:
    """The caller as whom a request is answered: the user a `service` caller names, else the caller."""
    if principal is None or "service" not in principal.roles:
        return principal
    named = {k: v for k, v in metadata or () if k in (ON_BEHALF_OF_USER, ON_BEHALF_OF_ORG) and isinstance(v, str)}
    if ON_BEHALF_OF_USER not in named:
        return principal
    return Principal(
        token_hash=principal.token_hash,
        roles=frozenset({"user"}),
        user_id=named[ON_BEHALF_OF_USER],
        org_id=named.get(ON_BEHALF_OF_ORG, ""),
    )


def behalf_metadata(principal: Principal | None) -> tuple[tuple[str, str], ...]:
    """The metadata by which a service says whom it acts for (nothing for an open or all-seeing caller)."""
    if principal is None or not principal.isolated:
        return ()
    return ((ON_BEHALF_OF_USER, principal.user_id), (ON_BEHALF_OF_ORG, principal.org_id))


def identify(
    authorizer: Authorizer | None, service: str, metadata: Sequence[tuple[str, str | bytes]] | None, subject: str
) -> Principal | None:
    """The caller: checked against the tokens when there are any; else known by its client
    certificate under mutual TLS; else anonymous (None)."""
    if authorizer is not None:
        return replace(authorizer.authorize(service, metadata), subject=subject)
    return Principal(user_id=subject, subject=subject) if subject else None


def peer_subject(context: grpc.aio.ServicerContext) -> str:
    """The verified client certificate's subject (its common name), or '' without mutual TLS."""
    auth = context.auth_context()
    names = auth.get("x509_subject") or auth.get("x509_common_name") or []
    return names[0].decode() if names else ""
