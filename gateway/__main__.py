"""`python -m gateway`: run the HTTP edge."""

from svckit.grpcenv import tune_grpc

if __name__ == "__main__":
    tune_grpc()  # before anything below imports grpc
    from gateway.config import GatewayConfig
    from gateway.server import run
    from svckit.env import load_or_exit
    from svckit.logs import configure_logging
    from svckit.parent import exit_with_parent

    config = load_or_exit(GatewayConfig.from_env, "gateway")
    configure_logging("gateway", config.log_level)
    exit_with_parent()
    run(config)  # uvicorn behind the edge's limits (gateway/server.py)
