"""Preparing a data directory: the same steps for the first start and for any CLI command.

A new, empty data dir gets its directories, its schema and (unless the config names real
files) a self-signed certificate.  An existing database with an older schema is refused with
the exact upgrade command; nothing here changes a schema that already exists.
"""

from __future__ import annotations

import os

from mailbox_appliance.config import Config
from mailbox_appliance.smtp.srs import load_secret
from mailbox_appliance.store.migrate import ensure_current
from mailbox_appliance.tls import ensure_certificate


def initialise(config: Config) -> list[str]:
    """Make the data dir ready to serve; returns what was found or done, for the log.

    Raises SchemaError (stale or foreign schema) or OSError (unwritable directories).
    """
    notes = []
    if not os.path.isdir(config.data_dir):
        os.makedirs(config.data_dir, mode=0o750)
        notes.append(f"created data directory {config.data_dir}")
    os.makedirs(config.hot_blob_path, exist_ok=True)
    notes.append(ensure_current(config.database_url, config.source))
    made = ensure_certificate(config)
    if made:
        notes.append(made)
    if config.delivery.srs and not os.path.exists(config.srs_secret_path):
        load_secret(config.srs_secret_path)
        notes.append(f"created the SRS secret {config.srs_secret_path}")
    return notes
