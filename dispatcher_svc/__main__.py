"""`python -m dispatcher_svc`: run the dispatcher (gRPC Dispatch + provider WebSocket link)."""

from dispatcher_svc.config import DispatcherConfig
from dispatcher_svc.server import main
from svckit.logs import configure_logging
from svckit.loop import run

if __name__ == "__main__":
    config = DispatcherConfig.from_env()
    configure_logging("dispatcher", config.log_level)
    run(main(config))
