"""Greffe mail gateway: authenticated, encrypted email intake for court clerks."""

__version__ = "0.1.0"
