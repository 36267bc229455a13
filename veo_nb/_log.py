"""The ``veo_nb`` logger: quiet by default, ``VEO_LOG=debug`` (or info, warning)
sends it to stderr."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("veo_nb")
logger.addHandler(logging.NullHandler())

_level = os.environ.get("VEO_LOG", "").strip().upper()
if _level in ("DEBUG", "INFO", "WARNING", "ERROR"):
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(_level)
