"""The ``lamassu`` command line: publishes commands, waits for replies; no business rules."""
