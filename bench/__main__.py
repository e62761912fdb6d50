"""`python -m bench run [--quick] [--only SCENARIO]`: the benchmark suite (see bench/run.py)."""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] != ["run"]:
        sys.exit("usage: python -m bench run [--quick] [--only SCENARIO] [--no-report]")
    from bench.run import main

    sys.exit(main(sys.argv[2:]))
