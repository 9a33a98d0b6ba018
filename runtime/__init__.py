"""Plumbing every process shares: settings, logging, bus, database, outbox, and the
messaging kernel. No domain words live here, no engine is imported, and importing it
opens nothing.

The kernel (README, "The messaging kernel"): ``routes`` (how a worker binds a message
to its handler), ``dispatch`` (decode once, check the sender, route), ``batches``
(writing routes: inbox, savepoints, outbox), ``reads`` (READ routes), ``settlement``
(the one table of who replies and who acks), ``delivery`` (the ports they share), and
``testing`` (the same dispatcher in memory, for handler tests).
"""
