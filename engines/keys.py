"""Key types, re-exported from ``contracts.keys`` where the vocabulary is defined once.

It lives in contracts so that contracts never import engines (and their I/O libraries).
"""

from contracts.keys import KeyType

__all__ = ["KeyType"]
