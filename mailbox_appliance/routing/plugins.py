"""Plug-in objects (``IRoutingPolicyFactory``) for the built-in policies.

twisted/plugins/mailbox_appliance_routing.py exposes them; policies are imported only when
built, so discovering plug-ins stays cheap.
"""

from __future__ import annotations

from importlib import import_module

from twisted.plugin import IPlugin
from zope.interface import implementer

from mailbox_appliance.interfaces import IRoutingPolicyFactory


@implementer(IPlugin, IRoutingPolicyFactory)
class PolicyFactory:
    def __init__(self, name: str, path: str):
        self.name = name
        self._path = path

    def build(self, context):
        module, _, cls = self._path.rpartition(".")
        return getattr(import_module(module), cls)(context)


direct = PolicyFactory("direct", "mailbox_appliance.routing.static.DirectPolicy")
smarthost = PolicyFactory("smarthost", "mailbox_appliance.routing.static.SmarthostPolicy")
adaptive = PolicyFactory("adaptive", "mailbox_appliance.routing.adaptive.AdaptivePolicy")
