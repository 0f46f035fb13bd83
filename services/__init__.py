"""Twisted services, one per listener."""
