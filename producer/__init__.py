"""The producer side: ``feedkit.Producer`` (needs the ``producer`` extra)."""

from feedkit.producer.producer import Producer

__all__ = ["Producer"]
