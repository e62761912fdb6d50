"""`python -m gateway`: run the HTTP edge."""

from svckit.grpcenv import tune_grpc

if __name__ == "__main__":
    tune_grpc()  # before anything below imports grpc
    import uvicorn

    from gateway.app import create_app
    from gateway.config import GatewayConfig
    from svckit.env import load_or_exit
    from svckit.logs import configure_logging
    from svckit.parent import exit_with_parent

    config = load_or_exit(GatewayConfig.from_env, "gateway")
    configure_logging("gateway", config.log_level)
    exit_with_parent()
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        log_config=None,
        log_level=config.log_level,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
    )
