"""`python -m registry_svc explain --model M [--tools] [--vision]`: why each provider is or
is not eligible (C7), asked of a running registry."""

from __future__ import annotations

import argparse

import grpc

from contract import hedgerow_common_pb2 as common_pb2
from contract import registry_pb2, registry_pb2_grpc
from registry_svc.config import RegistryConfig
from svckit.auth import sync_channel


def explain_table(reply: registry_pb2.ExplainReply) -> str:
    rows = [("PROVIDER", "VERSION", "VERDICT", "REASONS")]
    for p in reply.providers:
        verdict = "eligible" if p.eligible else "no"
        rows.append((p.provider_id, p.version or "-", verdict, ", ".join(p.reasons) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    if len(rows) == 1:
        lines.append("(no providers registered)")
    if reply.truncated:
        lines.append(f"({len(reply.providers)} of {reply.total} providers shown: C7)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m registry_svc explain", description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--tools", action="store_true", help="a request with tools")
    parser.add_argument("--vision", action="store_true", help="a request with image/video input")
    parser.add_argument("--allow", action="append", default=[], help="allowlisted provider")
    parser.add_argument("--registry", help="host:port (default: from HEDGEROW_REGISTRY_*)")
    ns = parser.parse_args(argv)
    config = RegistryConfig.from_env()
    target = ns.registry or f"{config.host}:{config.port}"
    with sync_channel(target, config.auth) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        try:
            reply = stub.Explain(
                registry_pb2.ExplainRequest(
                    model=ns.model,
                    traits=common_pb2.Traits(has_tools=ns.tools, requires_vision=ns.vision),
                    allowlist=ns.allow,
                ),
                timeout=5,
            )
        except grpc.RpcError as exc:
            print(f"registry at {target} did not answer: {exc.code().name}")  # type: ignore[attr-defined]
            return 2
    print(explain_table(reply))
    return 0
