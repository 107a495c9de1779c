"""Every zope Interface of the appliance: the seams where protocols and plug-ins meet."""

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
