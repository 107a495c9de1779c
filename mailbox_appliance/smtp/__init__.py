"""The ESMTP server: inbound MX and authenticated submission."""
