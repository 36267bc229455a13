"""An emulator of the VEO service for offline demos and tests.

:class:`Emulator` runs a real HTTP server that imitates the API (same paths,
Bearer auth, the 30 s polling rule, 2–5 min generation) and a separate media
host serving playable 8-second MP4s of realistic sizes, with every duration
multiplied by ``time_scale``. With ``state_path`` its tasks survive a restart.
See :class:`Emulator` for the options and the prompt directives.
"""

from ._faults import FaultConfig
from ._server import Emulator
from ._state import EmulatorStateError, EmulatorStateInUse
from ._stats import EmulatorStats, MediaRequest

__all__ = [
    "Emulator",
    "EmulatorStateError",
    "EmulatorStateInUse",
    "EmulatorStats",
    "FaultConfig",
    "MediaRequest",
]
