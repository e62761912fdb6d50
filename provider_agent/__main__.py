"""`python -m provider_agent`: run a provider, or `python -m provider_agent check DIR`."""

import sys

from provider_agent.main import main

if __name__ == "__main__":
    sys.exit(main())
