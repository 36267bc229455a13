"""The API key of a :class:`~veo_nb.VeoClient`: where it is found (the
argument, ``VEO_API_KEY``, a Colab secret), held so that no repr shows it,
redacted from text, and fingerprinted one way."""

from __future__ import annotations

import hashlib
import os

from .errors import MissingAPIKeyError, ValidationError

#: Name of the environment variable (and Colab secret) holding the API key.
API_KEY_ENV = "VEO_API_KEY"


def _colab_secret(name: str) -> str | None:
    """The Colab secret ``name``, or None outside Colab or on any error."""
    try:
        from google.colab import userdata  # type: ignore[import-not-found]

        value = userdata.get(name)
    except Exception:  # noqa: BLE001 - not in Colab, no access granted, secret missing
        return None
    return value if isinstance(value, str) else None


class ApiKey:
    """Holds the API key; its repr never shows it (debuggers, ``vars(client)``)."""

    __slots__ = ("value",)

    def __init__(self, value: str | None) -> None:
        self.value = value

    @classmethod
    def find(cls, api_key: str | None) -> ApiKey:
        """``api_key``, else ``VEO_API_KEY``, else the Colab secret of that
        name; blank means none."""
        if api_key is None:
            api_key = os.environ.get(API_KEY_ENV) or _colab_secret(API_KEY_ENV)
        if api_key is not None and not isinstance(api_key, str):
            raise ValidationError(f"api_key must be a string, not {type(api_key).__name__}")
        return cls((api_key or "").strip() or None)

    def __repr__(self) -> str:
        return "<secret>" if self.value else "<unset>"

    def require(self) -> str:
        """The key, or :class:`~veo_nb.MissingAPIKeyError` saying how to set one."""
        if not self.value:
            raise MissingAPIKeyError(
                f"no API key: set the {API_KEY_ENV} environment variable "
                f"(e.g. os.environ['{API_KEY_ENV}'] = '...' or a Colab secret named "
                f"{API_KEY_ENV}), or pass VeoClient(api_key=...). "
                "For demo mode without a key, use veo_nb.connect()."
            )
        return self.value

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the key replaced by ``***``."""
        key = self.value
        return text.replace(key, "***") if key else text

    def fingerprint(self) -> str | None:
        """A short one-way hash of the key (None without a key)."""
        key = self.value
        if key is None:
            return None
        return hashlib.sha256(b"veo_nb key fingerprint\0" + key.encode()).hexdigest()[:16]
