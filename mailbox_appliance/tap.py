"""twistd integration: ``twistd -n mailbox-appliance [--config PATH]``.

The configuration is validated and the data dir prepared in ``postOptions``, so twistd prints
every problem and exits non-zero before it binds a port or daemonises.  This is the only module
that uses the global reactor.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python import usage

from mailbox_appliance.config import ConfigError, load_config
from mailbox_appliance.datadir import initialise
from mailbox_appliance.errors import SchemaError
from mailbox_appliance.service import Appliance, ApplianceService

log = Logger()


class Options(usage.Options):
    synopsis = "[--config PATH]"
    longdesc = (
        "Run the mail appliance. Without --config it reads $MAILBOX_APPLIANCE_CONFIG, "
        "else built-in defaults (data in ./var, every service on 127.0.0.1)."
    )
    optParameters = [["config", "c", None, "YAML configuration file."]]

    def postOptions(self):
        try:
            self.config = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError("invalid configuration:\n  " + "\n  ".join(e.errors)) from None
        try:
            self.notes = initialise(self.config)
        except SchemaError as e:
            raise usage.UsageError(str(e)) from None
        except OSError as e:
            raise usage.UsageError(f"data_dir: cannot prepare {e.filename}: {e.strerror}") from None


def makeService(options: Options) -> ApplianceService:
    from twisted.internet import reactor

    for note in options.notes:
        log.info("{note}", note=note)
    source = options.config.source or "built-in defaults"
    log.info("mailbox-appliance starting with configuration from {source}", source=source)
    return ApplianceService(Appliance(options.config, reactor))
