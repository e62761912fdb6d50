"""`python -m normalizer_svc`: run the tool-schema normalizer gRPC service."""

from svckit.grpcenv import tune_grpc

if __name__ == "__main__":
    tune_grpc()  # before anything below imports grpc
    from normalizer_svc.config import NormalizerConfig
    from normalizer_svc.server import main
    from svckit.env import load_or_exit
    from svckit.logs import configure_logging
    from svckit.loop import run
    from svckit.parent import exit_with_parent

    config = load_or_exit(NormalizerConfig.from_env, "normalizer_svc")
    configure_logging("normalizer", config.log_level)
    exit_with_parent()
    run(main(config))
