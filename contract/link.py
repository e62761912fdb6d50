"""The provider link's shared limits, text formats and close codes (rules F3-F8): both ends
read them here. The dispatcher's are settings (`dispatcher_svc/config.py`) defaulting to
these; the agent holds itself to the defaults so an honest agent is never refused."""

from __future__ import annotations

from typing import Final

# The largest WebSocket frame either end accepts (the dispatcher's default; configurable there).
MAX_FRAME_BYTES: Final = 10 * 1024 * 1024
# The largest frame before the key-possession challenge is passed (F7): a `Register`. An
# honest one is a few KiB (64 models of 256-character ids fit in ~20 KiB).
MAX_REGISTER_BYTES: Final = 64 * 1024
# The largest plaintext of one sealed chunk, and of all the chunks of one `Chunk` frame
# together (F8): well under the gateway<->dispatcher gRPC message limit (16 MiB).
MAX_CHUNK_BYTES: Final = 1024 * 1024
# What NaCl's box adds to a plaintext: a 24-byte nonce and a 16-byte MAC.
SEAL_OVERHEAD_BYTES: Final = 40

# Text a provider reports (F4). Ids and versions go into response headers and logs, so they
# are printable ASCII without spaces; hardware may hold spaces ("NVIDIA RTX 4090").
MAX_PROVIDER_ID_CHARS: Final = 128
MAX_MODEL_ID_CHARS: Final = 256
MAX_VERSION_CHARS: Final = 64
MAX_HARDWARE_CHARS: Final = 128
# Models one provider may advertise (also the most entries a heartbeat may carry), and the
# largest per-model concurrency it may claim.
MAX_MODELS_PER_PROVIDER: Final = 64
MAX_MODEL_CONCURRENCY: Final = 256

# Close codes (RFC 6455). POLICY: the dispatcher refused this provider (bad enrollment token,
# failed challenge, untrusted, replaced, id bound to another key, over its token's caps); an
# agent closed with it does not retry at once.
CLOSE_POLICY: Final = 1008
# PROTOCOL: a frame broke the link protocol (malformed, unexpected, wrong first frame, a
# field outside its format).
CLOSE_PROTOCOL: Final = 1002
# TRY_AGAIN_LATER: the dispatcher is busy (too many registrations in progress); back off.
CLOSE_TRY_AGAIN: Final = 1013
# A close frame's reason is at most 123 bytes (RFC 6455 section 5.5).
MAX_CLOSE_REASON_BYTES: Final = 123


def is_name(value: str, max_chars: int, *, required: bool = True) -> bool:
    """A provider id, model id or version: 1 (0 unless `required`) to `max_chars` printable
    ASCII characters, no space, no control character (so no CR/LF header injection)."""
    if not value:
        return not required
    return len(value) <= max_chars and all("!" <= ch <= "~" for ch in value)


def is_label(value: str, max_chars: int) -> bool:
    """Free text such as hardware: up to `max_chars` printable ASCII characters, spaces
    allowed, no control character."""
    return len(value) <= max_chars and all(" " <= ch <= "~" for ch in value)


def close_reason(text: str) -> str:
    """`text` cut to what fits a close frame (whole characters; ASCII in practice)."""
    data = text.encode()[:MAX_CLOSE_REASON_BYTES]
    return data.decode(errors="ignore")
