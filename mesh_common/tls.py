"""How the mesh's clients and servers connect: TLS (mutual when a CA for clients is given), message
limits, and balancing over replicas.

Files are PEM. A server serves TLS when it has a certificate and key, and asks every client for a
certificate signed by `ca` when that is set too. A client uses TLS when it has a CA to trust (or a
certificate of its own to present), and then checks the server against that CA.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

# Message size limits, set explicitly on both ends (grpc's defaults differ between send and receive).
# The largest message the contract allows is a SubmitBatch of 100,000 essays with the longest ids
# and names: about 28 MB.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
MESSAGE_SIZE_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)


# Calls that may be sent again when a replica is unavailable: reads, BatchUpload (content is stored
# once by its sha256) and SubmitBatch (a request id makes a batch once). grpc retries them on another
# address of the channel; the channel spreads calls over every address it has (round robin).
# Streamed uploads are retried by the runner, which can send a stream again from the file.
RETRIED = {
    "huleedu.content.v1.ContentService": ("BatchUpload", "Get", "BatchGet", "Download", "Stat", "FindByChecksum"),
    "huleedu.cj.v1.AssessmentService": (
        "SubmitBatch", "GetBatch", "ListBatches", "WatchBatch", "GetBatchResults", "ListComparisons",
    ),
    "huleedu.cj.v1.AdminService": (
        "GetAssignment", "ListAssignments", "ListAnchors", "ListGradeScales", "GetGradeScale",
    ),
}  # fmt: skip
SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [
                    {"service": service, "method": method} for service, methods in RETRIED.items() for method in methods
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)
# A call can be retried only while its request is still buffered: grpc's default of 256 KiB would
# leave a BatchUpload of a few hundred essays without its retry.
RETRY_BUFFER_OPTIONS = (
    ("grpc.per_rpc_retry_buffer_size", 16 * 1024 * 1024),
    ("grpc.retry_buffer_size", 64 * 1024 * 1024),
)
CHANNEL_OPTIONS = (
    *MESSAGE_SIZE_OPTIONS,
    *RETRY_BUFFER_OPTIONS,
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
)


def channel_target(address: str) -> str:
    """The grpc target for an address flag: one `host:port` as it is; `dns:///name:port` (every
    address the name resolves to, followed as DNS changes); or several `host:port` separated by
    commas, each resolved once now (an `ipv4:`/`ipv6:` list)."""
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if len(parts) <= 1:
        return address
    resolved = [_resolve(part) for part in parts]
    families = {family for family, _ in resolved}
    if len(families) > 1:
        raise ValueError(f"addresses {address!r} mix IPv4 and IPv6; give one kind, or use dns:///name:port")
    return f"{families.pop()}:" + ",".join(where for _, where in resolved)


def _resolve(part: str) -> tuple[str, str]:
    """("ipv4" or "ipv6", "ip:port") for one `host:port`."""
    host, _, port = part.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ValueError(f"{part!r} is not host:port; give addresses as host:port,host:port")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            ip = ipaddress.ip_address(socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0][4][0])
        except OSError as error:
            raise ValueError(f"cannot resolve {host!r} in {part!r}: {error.strerror or error}") from None
    return ("ipv4", f"{ip}:{port}") if ip.version == 4 else ("ipv6", f"[{ip}]:{port}")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the {what} {path}: {error.strerror}") from None


@dataclass(frozen=True)
class TlsFiles:
    cert: str = ""  # this side's certificate chain
    key: str = ""  # its private key
    ca: str = ""  # server: CA of client certificates (mutual TLS); client: CA of the server's certificate

    def server_credentials(self) -> grpc.ServerCredentials | None:
        if not (self.cert or self.key):
            if self.ca:
                raise ValueError("a client CA (mutual TLS) needs the server's own certificate and key too")
            return None
        if not (self.cert and self.key):
            raise ValueError("TLS needs both a certificate and its key")
        pair = (_read(self.key, "TLS key"), _read(self.cert, "TLS certificate"))
        client_ca = _read(self.ca, "client CA") if self.ca else None
        return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=bool(client_ca))

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        if not (self.ca or self.cert):
            return None
        if bool(self.cert) != bool(self.key):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "CA certificate") if self.ca else None,
            private_key=_read(self.key, "TLS key") if self.key else None,
            certificate_chain=_read(self.cert, "TLS certificate") if self.cert else None,
        )


def open_channel(
    address: str, tls: TlsFiles | None = None, interceptors: Sequence[grpc.aio.ClientInterceptor] = ()
) -> grpc.aio.Channel:
    """The one way our clients open a channel: to one address or several replicas (see
    `channel_target`), calls spread over them and idempotent ones retried on another when one is
    unavailable; TLS when configured; explicit message size limits."""
    target = channel_target(address)
    credentials = tls.channel_credentials() if tls else None
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS, interceptors=interceptors)
