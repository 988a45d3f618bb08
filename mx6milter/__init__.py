"""mx6milter: accept mail over IPv6 only on positive evidence; push the rest back to IPv4."""

__version__ = "0.1.0"
