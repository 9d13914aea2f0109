"""Provider settings for `Flow(provider=...)`: `LocalProvider()` and `MithrilProvider(api_key=...)`.

These are plain settings objects; the providers themselves run inside flowd, which the SDK hands
the settings to (`ProviderService.ConfigureProvider`)."""

from __future__ import annotations

from flow.providers.local import LocalProvider
from flow.providers.mithril import MithrilProvider

__all__ = ["LocalProvider", "MithrilProvider"]
