"""Plumbing every process shares: settings, logging, bus, database, outbox, dispatch.

No domain words live here; importing it opens nothing.
"""
