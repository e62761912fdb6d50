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
from provider_agent.link import LinkClient
from provider_agent.scan import format_check_report, scan_models
from provider_agent.templates import Strictness
from svckit.env import ConfigError
from svckit.logs import configure_logging

log = logging.getLogger("provider_agent")


def build_engine(config: AgentConfig) -> Engine:
    if config.engine == "openai":
        from provider_agent.engines.openai import OpenAIEngine

        return OpenAIEngine(config.upstream_url)
    return SimEngine(config.sim)


async def run_agent(config: AgentConfig) -> None:
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
    client = LinkClient(config, RequestHandler(cards, build_engine(config), strictness))
    loop = asyncio.get_running_loop()
    runner = asyncio.create_task(client.run_forever())
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if runner.done():
        stopper.cancel()
        runner.result()
        return
    log.info("stopping")
    await client.stop()
    runner.cancel()
    try:
        await runner
    except asyncio.CancelledError:
        if not runner.cancelled():
            raise


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "check":
        parser = argparse.ArgumentParser(prog="python -m provider_agent check")
        parser.add_argument("model_dir", type=Path)
        parser.add_argument("--strictness", choices=["strict", "lenient"], default="strict")
        ns = parser.parse_args(args[1:])
        cards = scan_models(ns.model_dir, strictness=Strictness(ns.strictness))
        print(format_check_report(cards))
        return 0 if all(c.template_render_ok is not False for c in cards) else 1
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
    parser.add_argument("--max-concurrency", type=int)
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
            max_concurrency=ns.max_concurrency,
        )
    except ConfigError as exc:
        parser.error(str(exc))
    configure_logging("provider_agent", config.log_level)
    asyncio.run(run_agent(config))
    return 0
