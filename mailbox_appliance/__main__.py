"""``python -m mailbox_appliance``: the admin command line."""

from mailbox_appliance.cli import main

main()
