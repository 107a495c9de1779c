"""Every zope Interface of the appliance: the seams where protocols and plug-ins meet."""

import datetime
from dataclasses import dataclass

from zope.interface import Attribute, Interface


class IAccount(Interface):
    """An authenticated mail account: the avatar every protocol's portal login returns."""

    account_id = Attribute("The account's id in the store.")
    address = Attribute("The account's normalized address.")


class IBlobTier(Interface):
    """A place blob files live (the hot tier now; colder tiers plug in behind the same calls)."""

    name = Attribute("The tier's name as recorded in the blobs table, e.g. 'hot'.")

    def path_for(sha256):
        """The local file path of the blob named ``sha256`` in this tier."""

    def prepare_thd():
        """Create directories and remove unfinished files; runs on a blob thread."""


class IRoutingPolicyFactory(Interface):
    """A routing policy plug-in, found with ``twisted.plugin`` and chosen by ``routing.policy``.

    Drop a module into ``twisted/plugins/`` that defines an object providing this interface.
    """

    name = Attribute("The name ``routing.policy`` chooses the policy by.")

    def build(context):
        """An IRoutingPolicy for ``context`` (routing.RoutingContext: reactor, config,
        resolver, scoreboard)."""


class IRoutingPolicy(Interface):
    """Chooses how each message leaves: the seam of the outbound queue runner."""

    def start():
        """Begin background work (e.g. DNSBL checks); may return a Deferred."""

    def stop():
        """End background work; may return a Deferred."""

    def routes(envelope, domain):
        """A Deferred firing with the routes (routing.Route) to try, best first, for mail from
        ``envelope`` (routing.Envelope) to recipients at ``domain``.

        Fails with routing.RoutingError: ``permanent`` (no such domain, null MX: bounce now)
        or not (DNS trouble: retry later).
        """

    def report(attempt):
        """Learn from one attempt on a route (routing.Attempt): connect time, throughput,
        replies, TLS; called for every attempt, successful or not."""


class IUploadBackend(Interface):
    """Where the file-transfer station's resumable uploads (tus 1.0.0) live: the store, in
    the appliance; web/tus.py speaks the protocol over it.  ``owner`` is an account id; an
    upload of another owner is reported as absent (never revealed).  Every method returns a
    Deferred; failures are the exceptions of ``mailbox_appliance.errors`` named below."""

    def create(owner, length, metadata, parts=None, partial=False):
        """A new upload of ``length`` bytes (None: declared later, creation-defer-length) with
        ``metadata`` (dict of str to bytes, from Upload-Metadata); ``parts``: the ids of
        finished partial uploads to concatenate (a final upload); ``partial``: a part of a
        later final upload (Upload-Concat: partial).  Fires with UploadInfo; fails with
        UploadTooLarge (the reason names the limit)."""

    def info(owner, upload_id):
        """UploadInfo, or None when there is no such upload for ``owner``; fails with
        UploadGone(expired=True) when it expired (tus: 410, not 404)."""

    def declare_length(owner, upload_id, length):
        """Set a deferred length once; fires with UploadInfo; UploadTooLarge, UploadConflict."""

    def open_writer(owner, upload_id, offset, checksum=None):
        """An IUploadWriter appending at ``offset``; fails with OffsetMismatch when the
        upload is elsewhere, UploadGone when it does not exist or expired, UploadConflict
        when it is complete or a final (concatenated) upload.  ``checksum``: (algorithm,
        digest bytes) the chunk must match (tus checksum extension: sha1, sha256)."""

    def terminate(owner, upload_id):
        """Delete the upload and what it holds (tus termination); UploadGone if absent."""

    def open_content(owner, upload_id):
        """A finished upload's content for download: fires with (size, sha256 hex, read)
        where read(offset, length) fires with bytes; UploadGone if absent or unfinished."""


@dataclass(frozen=True)
class UploadInfo:
    """What the station knows of one upload (tus HEAD: Upload-Offset, Upload-Length...)."""

    id: str
    offset: int
    #: None until declared (creation-defer-length).
    length: int | None
    metadata: dict
    #: When an unfinished upload is reaped (tus expiration); None = never.
    expires: datetime.datetime | None = None
    #: Concatenation: a partial upload, or a final one made of partials.
    partial: bool = False
    final: bool = False
    #: A final upload's parts (upload ids, in order), for HEAD's Upload-Concat.
    parts: tuple[str, ...] = ()
    #: Set once complete: the content's SHA-256 (a blob of the store).
    sha256: str | None = None

    @property
    def complete(self) -> bool:
        return self.length is not None and self.offset == self.length


class IUploadWriter(Interface):
    """The bytes of one PATCH, appended as they arrive, never held whole."""

    def write(data):
        """Append ``data``; returns None, or a Deferred the caller waits for before the next
        write (back-pressure: the disk is slower than the network)."""

    def finish():
        """Everything of this PATCH arrived: make it durable (fsync) and record the offset;
        fires with UploadInfo (complete when offset == length: then the content has become
        a blob).  Fails with ChecksumMismatch after discarding the chunk."""

    def keep():
        """The connection dropped mid-PATCH: keep what arrived (durable, offset recorded),
        as if the PATCH had been that long; fires with UploadInfo.  No checksum is applied."""
