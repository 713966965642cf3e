"""engineroom: a self-hosted backend platform."""

__version__ = "0.1.0"
