"""Watching the appliance: health, metrics, alarms, and the loopback admin listener."""
