"""The provider link's shared limits and close codes (rule F3): both ends read them here."""

from __future__ import annotations

from typing import Final

# The largest WebSocket frame either end accepts (the dispatcher's default; configurable there).
MAX_FRAME_BYTES: Final = 10 * 1024 * 1024

# Close codes (RFC 6455). POLICY: the dispatcher refused this provider (bad enrollment token,
# failed challenge, untrusted, replaced); an agent closed with it does not retry at once.
CLOSE_POLICY: Final = 1008
# PROTOCOL: a frame broke the link protocol (malformed, unexpected, wrong first frame).
CLOSE_PROTOCOL: Final = 1002
