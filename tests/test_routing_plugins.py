"""Routing policies are plug-ins: a third party's, dropped into twisted/plugins, is found by
name like the built-in ones."""

from __future__ import annotations

import os
import random
import sys
import textwrap

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import twisted.plugins
from mailbox_appliance.config import ConfigError, parse_config
from mailbox_appliance.interfaces import IRoutingPolicy
from mailbox_appliance.routing import RoutingContext, build_policy, policy_names
from mailbox_appliance.routing.static import DirectPolicy

PLUGIN = """
from twisted.plugin import IPlugin
from zope.interface import implementer

from mailbox_appliance.interfaces import IRoutingPolicyFactory
from mailbox_appliance.routing.static import DirectPolicy


class AcmePolicy(DirectPolicy):
    pass


@implementer(IPlugin, IRoutingPolicyFactory)
class AcmeFactory:
    name = "acme"

    def build(self, context):
        return AcmePolicy(context)


acme = AcmeFactory()
"""


class PluginDiscoveryTests(SynchronousTestCase):
    def setUp(self):
        root = os.path.abspath(self.mktemp())
        plugins = os.path.join(root, "twisted", "plugins")
        os.makedirs(plugins)
        with open(os.path.join(plugins, "acme_routing.py"), "w") as f:
            f.write(textwrap.dedent(PLUGIN))
        # As if the plug-in's package were installed: its twisted/plugins joins the path.
        sys.path.insert(0, root)
        twisted.plugins.__path__.append(plugins)
        self.addCleanup(sys.path.remove, root)
        self.addCleanup(twisted.plugins.__path__.remove, plugins)
        self.addCleanup(sys.modules.pop, "twisted.plugins.acme_routing", None)

    def test_builtin_and_third_party_policies_are_installed(self):
        self.assertLessEqual({"direct", "smarthost", "adaptive", "acme"}, policy_names())

    def test_routing_policy_chooses_the_third_party_policy_by_name(self):
        config = parse_config({"routing": {"policy": "acme"}})
        context = RoutingContext(Clock(), config, None, None, random.Random(1))
        policy = build_policy(context)
        self.assertEqual(type(policy).__name__, "AcmePolicy")
        self.assertIsInstance(policy, DirectPolicy)
        self.assertTrue(verifyObject(IRoutingPolicy, policy))

    def test_an_unknown_policy_is_refused_naming_the_installed_ones(self):
        with self.assertRaises(ConfigError) as caught:
            parse_config({"routing": {"policy": "acne"}})
        (error,) = caught.exception.errors
        self.assertTrue(error.startswith("routing.policy: unknown policy 'acne'"), error)
        self.assertIn("acme", error)
        self.assertIn("adaptive", error)
