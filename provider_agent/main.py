"""Command line of the provider agent: run it, or check a model folder's templates."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from provider_agent import __version__
from provider_agent.config import AgentConfig
from provider_agent.engines.base import Engine
from provider_agent.engines.sim import SimEngine
from provider_agent.handler import RequestHandler
from provider_agent.keyfile import load_or_create_key
from provider_agent.link import LinkClient
from provider_agent.scan import format_check_report, scan_models
from provider_agent.templates import Strictness
from svckit.env import ConfigError
from svckit.logs import configure_logging
from svckit.loop import run as svckit_run
from svckit.parent import exit_with_parent

log = logging.getLogger("provider_agent")


def build_engine(config: AgentConfig) -> Engine:
    if config.engine == "openai":
        from provider_agent.engines.openai import OpenAIEngine

        return OpenAIEngine(
            config.upstream_url,
            timeout_s=config.upstream_timeout_s,
            api_key=config.upstream_api_key,
        )
    return SimEngine(config.sim)


def build_agent(config: AgentConfig) -> LinkClient:
    """Everything a running agent needs, wired: its persistent key (F5: loaded from, or
    created in, `config.key_file`, first, so a bad key file stops the start before any
    work), the scanned models, the engine, the request handler and the link client."""
    keys, created = load_or_create_key(config.key_file)
    log.info(
        "provider key created" if created else "provider key loaded",
        extra={"key_file": str(config.key_file), "public_key": keys.public_bytes.hex()},
    )
    strictness = Strictness(config.template_strictness)
    cards = {card.id: card for card in scan_models(config.model_dir, strictness=strictness)}
    if not cards:
        raise ConfigError(f"no models found under {config.model_dir}")
    for card in cards.values():
        log.info(
            "model scanned",
            extra={
                "model": card.id,
                "vision": card.is_vision,
                "template_render_ok": card.template_render_ok,
                "tools": card.cap_tools,
                "system": card.cap_system,
            },
        )
    handler = RequestHandler(cards, build_engine(config), strictness)
    log.info("templates compiled", extra={"count": handler.warm_templates()})
    return LinkClient(config, handler, keys=keys)


async def run_agent(config: AgentConfig) -> None:
    client = build_agent(config)
    try:
        await _serve_until_signal(client)
    finally:
        await client.handler.engine.aclose()


async def _serve_until_signal(client: LinkClient) -> None:
    """Run the link until SIGINT/SIGTERM, then stop cleanly (Goodbye first)."""
    loop = asyncio.get_running_loop()
    runner = asyncio.create_task(client.run_forever())
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if runner.done():
        stopper.cancel()
        runner.result()
        return
    log.info("stopping")
    await client.stop()
    try:
        # run_forever returns by itself once stop() closed the link; bound the wait anyway.
        await asyncio.wait_for(runner, timeout=5.0)
    except TimeoutError:
        log.warning("link did not close in time")


def check_main(argv: list[str]) -> int:
    """`check DIR`: print the self-check per model, template source and fixture group.
    Exit 0 when every template renders (a refused capability is reported, not fatal),
    1 when any model's template is broken, 2 when DIR holds no model."""
    parser = argparse.ArgumentParser(
        prog="python -m provider_agent check",
        description="Render-check every model's chat template (rule E3).",
    )
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--strictness", choices=["strict", "lenient"], default="strict")
    ns = parser.parse_args(argv)
    cards = scan_models(ns.model_dir, strictness=Strictness(ns.strictness))
    if not cards:
        print(f"no models found under {ns.model_dir}", file=sys.stderr)
        return 2
    print(format_check_report(cards), end="")
    broken = [c.id for c in cards if c.template_render_ok is False]
    if broken:
        print(f"BROKEN: {', '.join(broken)} (template_render_ok=false: never routed)")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "check":
        return check_main(args[1:])
    parser = argparse.ArgumentParser(
        prog="python -m provider_agent", description="Join a Hedgerow fleet."
    )
    parser.add_argument("--dispatcher", help="ws://host:port of the dispatcher link")
    parser.add_argument("--token", help="enrollment token")
    parser.add_argument("--model-dir", type=Path, help="folder of model snapshot folders")
    parser.add_argument("--provider-id")
    parser.add_argument("--engine", choices=["sim", "openai"])
    parser.add_argument(
        "--upstream", help="base URL of an OpenAI-compatible server (openai engine)"
    )
    parser.add_argument("--upstream-api-key", help="bearer token for the upstream server")
    parser.add_argument("--max-concurrency", type=int)
    parser.add_argument(
        "--key-file",
        type=Path,
        help="the provider's secret key (created 0600 if missing); default "
        "~/.config/hedgerow/provider.key",
    )
    parser.add_argument("--version", action="version", version=__version__)
    ns = parser.parse_args(args)
    try:
        config = AgentConfig.from_env(
            dispatcher_url=ns.dispatcher,
            token=ns.token,
            model_dir=ns.model_dir,
            provider_id=ns.provider_id,
            engine=ns.engine,
            upstream_url=ns.upstream,
            upstream_api_key=ns.upstream_api_key,
            max_concurrency=ns.max_concurrency,
            key_file=ns.key_file,
        )
    except ConfigError as exc:
        parser.error(str(exc))
    configure_logging("provider_agent", config.log_level)
    exit_with_parent()
    try:
        svckit_run(run_agent(config))
    except ConfigError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 2
    return 0
