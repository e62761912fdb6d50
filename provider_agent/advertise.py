"""What the agent tells the dispatcher about its models at registration (E1, F4).

The dispatcher refuses a whole `Register` over one model id outside the link's format or
over its model cap (F4), so the agent leaves such models out itself, loudly, and registers
the rest; the tri-state template verdicts (C2) are encoded exactly.
"""

from __future__ import annotations

import logging

from contract import hedgerow_common_pb2 as common_pb2
from contract.link import MAX_MODEL_ID_CHARS, MAX_MODELS_PER_PROVIDER, is_name
from provider_agent.scan import ModelCard

log = logging.getLogger(__name__)


def advertised(cards: dict[str, ModelCard]) -> dict[str, ModelCard]:
    """The cards whose ids fit the link's format, at most the model cap of them, in scan
    order; every one left out is logged."""
    out: dict[str, ModelCard] = {}
    for model_id, card in cards.items():
        if not is_name(model_id, MAX_MODEL_ID_CHARS):
            log.warning(
                "model not advertised: its id is not 1-%d printable ASCII characters",
                MAX_MODEL_ID_CHARS,
                extra={"model": model_id},
            )
        elif len(out) >= MAX_MODELS_PER_PROVIDER:
            log.warning(
                "model not advertised: over the cap of %d models per provider",
                MAX_MODELS_PER_PROVIDER,
                extra={"model": model_id},
            )
        else:
            out[model_id] = card
    return out


def model_infos(cards: dict[str, ModelCard], max_concurrency: int) -> list[common_pb2.ModelInfo]:
    """The `ModelInfo` of each card, as `Register` carries it."""
    infos = []
    for card in cards.values():
        info = common_pb2.ModelInfo(
            id=card.id, is_vision=card.is_vision, max_concurrency=max_concurrency
        )
        # Tri-state: absent means "no opinion"; false MUST be encoded (it is the routing signal).
        if card.template_render_ok is not None:
            info.template_render_ok = card.template_render_ok
        if card.cap_system is not None:
            info.cap_system = card.cap_system
        if card.cap_tools is not None:
            info.cap_tools = card.cap_tools
        if card.cap_vision is not None:
            info.cap_vision = card.cap_vision
        infos.append(info)
    return infos
