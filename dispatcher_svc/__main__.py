"""`python -m dispatcher_svc`: run the dispatcher (gRPC Dispatch + provider WebSocket link)."""

from svckit.grpcenv import tune_grpc

if __name__ == "__main__":
    tune_grpc()  # before anything below imports grpc
    from dispatcher_svc.config import DispatcherConfig
    from dispatcher_svc.server import main
    from svckit.env import load_or_exit
    from svckit.logs import configure_logging
    from svckit.loop import run
    from svckit.parent import exit_with_parent

    config = load_or_exit(DispatcherConfig.from_env, "dispatcher_svc")
    configure_logging("dispatcher", config.log_level)
    exit_with_parent()
    run(main(config))
