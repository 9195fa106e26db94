"""The Content Service's table: one row per stored blob."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ContentObject(Base):
    __tablename__ = "content_objects"
    # Identical bytes are stored once: the checksum is unique.
    __table_args__ = (UniqueConstraint("sha256", name="content_objects_sha256_key"),)

    storage_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    content_type: Mapped[str] = mapped_column(String(100), nullable=False)
    filename: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    # A huleedu.common.v1.ContentKind name, as text.
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    correlation_id: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # A huleedu.content.v1.ContentState name without its prefix (INTACT, DAMAGED, MISSING), as text:
    # what the last read or check found. An upload of the same bytes sets it back to INTACT.
    state: Mapped[str] = mapped_column(String(20), nullable=False, default="INTACT", server_default="INTACT")


class ContentGrant(Base):
    """Who may read stored content when tokens are on: each user (and organisation) that uploaded
    its bytes. The bytes are stored once, whoever sends them; the grants say whose they are."""

    __tablename__ = "content_grants"
    __table_args__ = (
        Index("content_grants_user_idx", "user_id"),
        Index("content_grants_org_idx", "org_id"),
    )

    storage_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("content_objects.storage_id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class HealthProbe(Base):
    """One row that the health check writes to, to learn that the database still takes writes."""

    __tablename__ = "content_health_probe"

    probe_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    probed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class BlobChunk(Base):
    """Content bytes in the database (`--blob-store database`): each blob in chunks of up to 1 MiB,
    under its storage id, or under a temporary key (`~` and a new id) while its upload is under way."""

    __tablename__ = "content_blob_chunks"

    blob_key: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    written_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
