"""`python -m dispatcher_svc`: run the dispatcher (gRPC Dispatch + provider WebSocket link)."""

import asyncio

from dispatcher_svc.config import DispatcherConfig
from dispatcher_svc.server import main
from svckit.logs import configure_logging

if __name__ == "__main__":
    config = DispatcherConfig.from_env()
    configure_logging("dispatcher", config.log_level)
    asyncio.run(main(config))
