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
