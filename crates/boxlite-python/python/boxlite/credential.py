"""``Credential``: what a REST runtime authenticates with.

``ApiKeyCredential`` (native) is registered as one, so ``isinstance(key, Credential)``
holds, as in BoxLite's SDK. ``BoxliteRestOptions(credential=...)`` takes an
``ApiKeyCredential``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from ._native import AccessToken, ApiKeyCredential


class Credential(ABC):
    """Something that hands out a bearer token for the server."""

    @abstractmethod
    def get_token(self) -> AccessToken:
        """The token to send now."""


Credential.register(ApiKeyCredential)

__all__ = ["Credential"]
