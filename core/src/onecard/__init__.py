"""onecard: a plugin-based multi-utility prepaid one-card management server.

This package is the small facade plugins import from::

    from onecard import hookimpl, UtilityRegistry
"""

from __future__ import annotations

import pluggy

from onecard.errors import OnecardError
from onecard.utility import Attachments, UtilityKind, UtilityRegistry

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``@hookimpl def onecard_register_utilities(...)``.
hookimpl = pluggy.HookimplMarker("onecard")

__all__ = [
    "Attachments",
    "OnecardError",
    "UtilityKind",
    "UtilityRegistry",
    "__version__",
    "hookimpl",
]
