"""Transport security for servers and clients: TLS, and mutual TLS when a CA for clients is given.

Files are PEM. A server serves TLS when it has a certificate and key, and asks every client for a
certificate signed by `ca` when that is set too. A client uses TLS when it has a CA to trust (or a
certificate of its own to present), and then checks the server against that CA.
"""

from __future__ import annotations

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
    """The one way our clients open a channel: TLS when configured, explicit message size limits."""
    credentials = tls.channel_credentials() if tls else None
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=MESSAGE_SIZE_OPTIONS, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=MESSAGE_SIZE_OPTIONS, interceptors=interceptors)
