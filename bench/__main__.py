"""`python -m bench run [--quick] [--only SCENARIO]`: the benchmark suite (bench/run.py);
`python -m bench ab REF`: this tree against git revision REF, side by side (bench/ab.py)."""

import sys

USAGE = (
    "usage: python -m bench run [--quick] [--only SCENARIO] [--no-report]\n"
    "       python -m bench ab REF [--requests N] [--rounds R]"
)

if __name__ == "__main__":
    command = sys.argv[1:2]
    if command == ["run"]:
        from bench.run import main
    elif command == ["ab"]:
        from bench.ab import main
    else:
        sys.exit(USAGE)
    sys.exit(main(sys.argv[2:]))
