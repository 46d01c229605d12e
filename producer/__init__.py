"""The producer side: ``feedkit.Producer`` and its validators (needs the ``producer`` extra).

The daemon around it is ``feedkit.producer.daemon`` (the ``feedkit-producer`` command).
"""

from feedkit.producer.producer import CycleReport, Producer
from feedkit.producer.validate import (
    CycleSummary,
    MaxChangeRatio,
    MinRecords,
    ValidationResult,
    load_validator,
)

__all__ = [
    "CycleReport",
    "CycleSummary",
    "MaxChangeRatio",
    "MinRecords",
    "Producer",
    "ValidationResult",
    "load_validator",
]
