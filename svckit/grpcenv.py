"""gRPC core settings that must be made before grpc is first imported.

grpcio 1.80 and later run on gRPC's new EventEngine. On this machine a message on an open
stream then costs about twice what it costs on the poller it replaces (a bidi ping-pong
between two grpc.aio ends: 160 us with it, 78 us without), and every request crosses
three such streams. So each service starts with the EventEngine client and listener
experiments off, unless the operator set GRPC_EXPERIMENTS themselves (an empty value
keeps gRPC's own defaults). bench/HISTORY.md has the before and after.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

DEFAULT_EXPERIMENTS = "-event_engine_client,-event_engine_listener"


class TooLate(RuntimeError):
    """grpc was imported before `tune_grpc()`: the setting would be silently ignored."""


def tune_grpc(environ: MutableMapping[str, str] = os.environ) -> None:
    """Call first thing in a service's `__main__`, before importing anything that
    imports grpc."""
    if "grpc" in sys.modules:
        raise TooLate("tune_grpc() must run before grpc is imported")
    environ.setdefault("GRPC_EXPERIMENTS", DEFAULT_EXPERIMENTS)
