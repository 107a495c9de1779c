"""The built-in routing policies, found by ``twisted.plugin`` like third-party ones."""

from mailbox_appliance.routing.plugins import adaptive, direct, smarthost

__all__ = ["adaptive", "direct", "smarthost"]
