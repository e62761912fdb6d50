"""`python -m stack` (what `make run` calls): the whole stack locally with simulated providers."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from stack.launcher import API_KEY, Ports, Stack, StackError


def banner(stack: Stack) -> str:
    models = stack.models()
    model = models[0] if models else "hedgerow-sim-1"
    url = stack.base_url
    return f"""
Hedgerow is running.
  base URL : {url}
  API key  : {API_KEY}
  models   : {", ".join(models)}
  logs     : {stack.log_dir}

curl:
  curl -N {url}/chat/completions -H 'Authorization: Bearer {API_KEY}' \\
    -H 'Content-Type: application/json' \\
    -d '{{"model": "{model}", "stream": true,
         "messages": [{{"role": "user", "content": "Hello"}}]}}'

Python (openai SDK):
  from openai import OpenAI
  client = OpenAI(base_url="{url}", api_key="{API_KEY}")
  for chunk in client.chat.completions.create(model="{model}", stream=True,
          messages=[{{"role": "user", "content": "Hello"}}]):
      print(chunk.choices[0].delta.content or "", end="", flush=True)

Press Ctrl-C to stop.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--free-ports", action="store_true", help="pick free ports instead of the defaults"
    )
    args = parser.parse_args()
    stack = Stack(ports=Ports.free() if args.free_ports else Ports.defaults())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("starting normalizer, registry, dispatcher, gateway and 2 sim providers...", flush=True)
    try:
        stack.start()
    except StackError as exc:
        print(f"failed to start: {exc}", file=sys.stderr)
        return 1
    print(banner(stack), flush=True)
    try:
        while not stop.wait(0.5):
            for proc in stack.processes.values():
                if not proc.alive():
                    print(
                        f"{proc.name} exited ({proc.popen.returncode}); stopping\n"
                        + proc.log_tail(),
                        file=sys.stderr,
                    )
                    stop.set()
    finally:
        print("stopping...", flush=True)
        stack.stop()
        print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
