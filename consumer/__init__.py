"""The consumer side: ``feedkit.Consumer`` and what it is built from. Never imports pyarrow."""

from feedkit.consumer.consumer import Consumer
from feedkit.consumer.health import Health
from feedkit.state import State

__all__ = ["Consumer", "Health", "State"]
