"""Configurations for tests: a private data dir, cheap password hashing, port-0 listeners."""

from __future__ import annotations

import os

from mailbox_appliance.config import SERVICES, Config, parse_config

#: argon2 parameters that keep tests fast; production defaults are much costlier.
CHEAP_HASH = {"time_cost": 1, "memory_kib": 8, "parallelism": 1}


def config_data(data_dir: str, **overrides) -> dict:
    """A YAML-shaped dict: everything off except what ``overrides`` turns on."""
    data = {
        "hostname": "mail.example.test",
        "data_dir": data_dir,
        "listen": {service: [] for service in SERVICES},
        "auth": {"password_hash": dict(CHEAP_HASH), "hash_threads": 1},
        "storage": {"gc_interval": 0},
        # Outbound mail stays queued unless a test sets up somewhere for it to go.
        "delivery": {"hold": True},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def make_config(data_dir: str, **overrides) -> Config:
    os.makedirs(data_dir, exist_ok=True)
    return parse_config(config_data(data_dir, **overrides))
