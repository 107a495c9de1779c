"""The database schema: the source of truth that the Alembic migrations follow.

Tables are SQLAlchemy Core; the store's ``*_txn`` functions use them and return plain data.
Addresses and domain names are stored lower-cased (local parts are treated case-insensitively,
as every large provider does), so uniqueness is a plain unique index on every backend.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

# Constraint names are fixed so migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: SQLite only makes INTEGER PRIMARY KEY an alias of the rowid; BigInteger elsewhere.
Id = BigInteger().with_variant(Integer(), "sqlite")

store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

domains = Table(
    "domains",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(253), nullable=False, unique=True),
    Column("created", DateTime(timezone=True), nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("address", String(320), nullable=False, unique=True),
    Column("domain_id", Id, ForeignKey("domains.id"), nullable=False, index=True),
    Column("password_hash", Text, nullable=False),
    Column("quota_bytes", BigInteger, nullable=False),
    Column("used_bytes", BigInteger, nullable=False, default=0),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
)

aliases = Table(
    "aliases",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("address", String(320), nullable=False, index=True),
    Column("domain_id", Id, ForeignKey("domains.id"), nullable=False, index=True),
    Column("target", String(320), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    UniqueConstraint("address", "target"),
)

mailboxes = Table(
    "mailboxes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("name", String(1024), nullable=False),
    Column("uidvalidity", BigInteger, nullable=False),
    Column("uidnext", BigInteger, nullable=False, default=1),
    Column("highestmodseq", BigInteger, nullable=False, default=1),
    Column("subscribed", Boolean, nullable=False, default=True),
    #: RFC 6154 attribute (``\\Sent``, ``\\Trash``...) or null.
    Column("special_use", String(32), nullable=True),
    Column("created", DateTime(timezone=True), nullable=False),
    #: UIDs from here on are \\Recent for the next session that claims them (RFC 3501
    #: §2.3.2: a message is recent in exactly one session); see store.entries.claim_recent_txn.
    Column("first_recent", BigInteger, nullable=False, default=1, server_default="1"),
    UniqueConstraint("account_id", "name"),
)

blobs = Table(
    "blobs",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("tier", String(16), nullable=False, default="hot"),
    Column("refcount", BigInteger, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("last_access", DateTime(timezone=True), nullable=False),
    #: When refcount last dropped to zero; garbage collection waits a grace period after it.
    Column("zero_since", DateTime(timezone=True), nullable=True),
    #: The content itself for a small blob of tier "inline" (see store.blob_rows); else null.
    Column("data", LargeBinary, nullable=True),
    Index("ix_blobs_refcount_zero_since", "refcount", "zero_since"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("blob_sha256", String(64), ForeignKey("blobs.sha256"), nullable=False, index=True),
    Column("size", BigInteger, nullable=False),
    Column("internal_date", DateTime(timezone=True), nullable=False),
    Column("message_id", Text, nullable=True),
    #: Cached IMAP ENVELOPE and BODYSTRUCTURE, computed once at delivery.
    Column("envelope", JSON, nullable=True),
    Column("mime_structure", JSON, nullable=True),
    #: How many mailbox entries point here; the blob is released when it reaches zero.
    Column("refcount", BigInteger, nullable=False, default=1),
)

mailbox_entries = Table(
    "mailbox_entries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("mailbox_id", Id, ForeignKey("mailboxes.id"), nullable=False),
    Column("uid", BigInteger, nullable=False),
    Column("message_id", Id, ForeignKey("messages.id"), nullable=False, index=True),
    #: Bit set of the RFC 3501 system flags; see store.mailboxes.SYSTEM_FLAGS.
    Column("flags", Integer, nullable=False, default=0),
    #: Space-separated IMAP keywords.
    Column("keywords", Text, nullable=False, default=""),
    Column("modseq", BigInteger, nullable=False),
    UniqueConstraint("mailbox_id", "uid"),
    #: CONDSTORE/QRESYNC (RFC 7162): "what changed since modseq N" in one mailbox.
    Index("ix_mailbox_entries_mailbox_id_modseq", "mailbox_id", "modseq"),
)

#: Tombstones of expunged entries, so a client that knew a mailbox at some modseq learns which
#: UIDs went since (RFC 7162 §3.2.5.2 VANISHED, and change notification).  Removed with their
#: mailbox by store.folders, not by a cascade.
mailbox_expunges = Table(
    "mailbox_expunges",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("mailbox_id", Id, ForeignKey("mailboxes.id"), nullable=False),
    Column("uid", BigInteger, nullable=False),
    Column("modseq", BigInteger, nullable=False),
    Index("ix_mailbox_expunges_mailbox_id_modseq", "mailbox_id", "modseq"),
)

#: The ordered change log (design rule 6), written in the transaction of every mutation.
journal = Table(
    "journal",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=True),
    Column("epoch", BigInteger, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)

#: Messages waiting to leave: one row per (message, remote recipient), or a bounce owed to a
#: sender.  The queue runner (smtp/runner.py) works through it; ``queue list`` shows it.
outbound_queue = Table(
    "outbound_queue",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    #: "relay": send the blob to ``recipient``; "bounce": tell ``sender`` that ``recipient``
    #: could not be delivered (``reason``), quoting the blob's headers.
    Column("kind", String(16), nullable=False),
    Column("blob_sha256", String(64), ForeignKey("blobs.sha256"), nullable=False, index=True),
    #: Bytes at the start of the blob not to send on (the Return-Path line of local delivery).
    Column("skip_bytes", Integer, nullable=False, default=0),
    #: The envelope sender; "" for the null reverse-path (a bounce is never bounced).
    Column("sender", String(320), nullable=False),
    Column("recipient", String(320), nullable=False),
    #: The authenticated account that submitted it, if any.
    Column("account_id", Id, nullable=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("next_attempt", DateTime(timezone=True), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    #: Why it is here (a bounce) or why the last attempt failed (a relay).
    Column("reason", Text, nullable=True),
    #: The ID the message was accepted under (the SMTP log's), to follow it in the log.
    Column("queue_id", String(16), nullable=True),
    #: The recipient's domain (lower case) for relay rows: the runner claims per domain.
    Column("domain", String(255), nullable=True),
    #: RFC 3463 status of the failure (``5.1.1``, ``4.4.1``) and the server that said so.
    Column("status", String(16), nullable=True),
    Column("remote_mta", String(255), nullable=True),
    Column("last_attempt", DateTime(timezone=True), nullable=True),
    #: The sender was told that this recipient's mail is delayed (delivery.delay_notice).
    Column("delay_notified", Boolean, nullable=False, default=False, server_default=false()),
    #: A running queue runner has it in hand; cleared at its start, so a crash loses nothing.
    Column("claimed", Boolean, nullable=False, default=False, server_default=false()),
)

#: What the queue runner has measured about each route (``mailbox-appliance routes``): one row
#: per (route, destination domain); domain "" holds the route's own state (DNSBL listing).
routing_state = Table(
    "routing_state",
    metadata,
    Column("route", String(64), primary_key=True),
    Column("domain", String(255), primary_key=True),
    Column("state", JSON, nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
)

# -- the file-transfer station (store/uploads.py, store/transfers.py) ----------------------

#: Resumable uploads (tus 1.0.0).  The bytes received so far live in ``<hot>/uploads/<id>``;
#: ``offset`` is how many of them are durable.  A complete upload's content becomes a blob,
#: held by the ``files`` row it made (``file_id``).  ``offset`` is quoted by SQLAlchemy.
uploads = Table(
    "uploads",
    metadata,
    #: A random token (160 bits, base32): it is the upload's URL.
    Column("id", String(64), primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False, index=True),
    #: Null until declared (tus creation-defer-length).
    Column("length", BigInteger, nullable=True),
    Column("offset", BigInteger, nullable=False, default=0),
    #: Upload-Metadata: key -> base64 of the value's bytes.
    Column("metadata", JSON, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    #: An unfinished upload is reaped after this; a complete one goes with its file.
    Column("expires", DateTime(timezone=True), nullable=True, index=True),
    #: tus concatenation: a part of a later final upload, or a final made of parts.
    Column("partial", Boolean, nullable=False, default=False, server_default=false()),
    Column("final", Boolean, nullable=False, default=False, server_default=false()),
    #: A final upload's partial upload ids, in order.
    Column("parts", JSON, nullable=True),
    #: Set once complete: the content's SHA-256, and the ``files`` row holding it.
    Column("sha256", String(64), nullable=True),
    Column("file_id", String(64), ForeignKey("files.id"), nullable=True, index=True),
)

#: Files of an account: on the station (they expire) or in the cloud drive (they do not).
#: Each row holds one reference to its blob.
files = Table(
    "files",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(1024), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("blob_sha256", String(64), ForeignKey("blobs.sha256"), nullable=False, index=True),
    #: "station" or "cloud".
    Column("kind", String(16), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=True, index=True),
)

#: Links that let anyone holding the token download one file.
share_links = Table(
    "share_links",
    metadata,
    #: A random token (160 bits, base32): it is the link.
    Column("token", String(64), primary_key=True),
    Column("file_id", String(64), ForeignKey("files.id"), nullable=False, index=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
    Column("password_hash", Text, nullable=True),
    Column("max_downloads", Integer, nullable=True),
    Column("downloads", Integer, nullable=False, default=0, server_default="0"),
    Column("revoked", Boolean, nullable=False, default=False, server_default=false()),
)
