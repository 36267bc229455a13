"""pytest plugin of veo_nb (registered as the ``veo_nb`` pytest11 entry point).

Provides the ``veo_emulator`` fixture. The emulator is imported only when the
fixture is used, so loading the plugin costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from veo_nb.emulator import Emulator


@pytest.fixture
def veo_emulator() -> Iterator[Emulator]:
    """A started :class:`veo_nb.emulator.Emulator` at ``time_scale=0.01``
    (a 30 s poll interval becomes 0.3 s, 2–5 min become 1.2–3 s) that never
    fails tasks at random; stopped after the test."""
    from veo_nb.emulator import Emulator

    emulator = Emulator(time_scale=0.01, failure_rate=0.0).start()
    try:
        yield emulator
    finally:
        emulator.stop()
