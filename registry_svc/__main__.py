"""`python -m registry_svc`: run the registry; `python -m registry_svc explain ...`: ask it why."""

import sys

from svckit.grpcenv import tune_grpc

if __name__ == "__main__":
    tune_grpc()  # before anything below imports grpc
    from registry_svc.config import RegistryConfig
    from svckit.env import load_or_exit
    from svckit.logs import configure_logging
    from svckit.loop import run
    from svckit.parent import exit_with_parent

    if sys.argv[1:2] == ["explain"]:
        from registry_svc.cli import main as cli_main

        sys.exit(cli_main(sys.argv[2:]))
    from registry_svc.server import main

    config = load_or_exit(RegistryConfig.from_env, "registry_svc")
    configure_logging("registry", config.log_level)
    exit_with_parent()
    run(main(config))
