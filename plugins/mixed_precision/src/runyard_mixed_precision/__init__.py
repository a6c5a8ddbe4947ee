"""runyard-mixed-precision: ``MixedPrecisionPlugin``, mixed-precision settings for tasks.

Names are imported lazily: the plugin manager imports :mod:`runyard_mixed_precision.hooks`
in every process that adds or runs tasks, and that must stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runyard_mixed_precision.plugin import (
        DEFAULT_ENV_VARS,
        DEFAULT_PRECISION,
        PRECISIONS,
        MixedPrecisionPlugin,
        NoPrecisionWarning,
    )

__all__ = [
    "DEFAULT_ENV_VARS",
    "DEFAULT_PRECISION",
    "PRECISIONS",
    "MixedPrecisionPlugin",
    "NoPrecisionWarning",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from runyard_mixed_precision import plugin

        return getattr(plugin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
