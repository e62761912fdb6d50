"""The `Slots` stream's release codes (registry.proto `ReleaseRequest.status_code`): a
Release says how the reservation ended, and that feeds the breaker (C4, B9)."""

from __future__ import annotations

from typing import Final

# The provider completed the request (only a `Complete` frame counts, B9).
RELEASE_SUCCESS: Final = 200
# Never used, or stopped by us (a race loser, a client gone): neutral for the breaker.
RELEASE_CANCELLED: Final = 0
# Any other value is the failure's HTTP-style status code (500, 502, 504 count as strikes).
