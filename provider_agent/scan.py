"""Model scan over Hugging Face snapshot folders (rule E2) and prompt rendering (E4).

``scan_models(root)`` treats each immediate subfolder of ``root`` holding ``config.json`` or
a template file as one model whose id is the folder name. For each model it collects every
chat-template source (E2 precedence, every entry of the list form), runs the self-check of
``templates.self_check`` on each, and folds the reports into the advertised verdicts.

Which source renders a request (mirroring transformers' named-template selection): plain
requests use the first collected source named ``default`` (the first source when none is);
tools requests use the first collected ``tool_use`` source when there is one, else the
plain one. Verdicts come from the sources that render requests ("used" sources):

- ``template_render_ok``: None when no source exists and nothing template-bearing failed to
  load; false when any used source fails base, or a template file (chat_template.jinja,
  chat_template.json, tokenizer_config.json) is unreadable, invalid JSON or holds a
  malformed ``chat_template`` -- the engine would fail loading it too; else true.
- ``system`` and ``vision``: true only if every used source passes (the tool source also
  renders tools requests that carry system text or images). ``vision`` is None for
  non-vision models.
- ``tools``: the tool source's tools group alone.

Sources that render no request (e.g. a ``rag`` entry, or tokenizer_config's template when
chat_template.jinja exists) are checked and shown by ``format_check_report`` but do not
move the verdicts: they cannot crash a request. The scan never raises for anything found
in a folder; problems are recorded on the card.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from provider_agent.templates import (
    ChatTemplate,
    CheckReport,
    Clock,
    FixtureGroup,
    Message,
    Strictness,
    TemplateCompileError,
    TemplateRenderError,
    compile_template,
    fold_system,
    render,
    self_check,
    template_messages,
)

__all__ = [
    "CHAT_TEMPLATE_JSON",
    "CONFIG_JSON",
    "DEFAULT_NAME",
    "JINJA_FILE",
    "TEMPLATE_FILES",
    "TOKENIZER_CONFIG",
    "TOOL_USE_NAME",
    "ModelCard",
    "TemplateCache",
    "TemplateRenderError",  # re-exported: callers of render_prompt catch it from here
    "TemplateSource",
    "format_check_report",
    "render_prompt",
    "scan_model",
    "scan_models",
]

JINJA_FILE = "chat_template.jinja"
CHAT_TEMPLATE_JSON = "chat_template.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
CONFIG_JSON = "config.json"
TEMPLATE_FILES: tuple[str, ...] = (JINJA_FILE, CHAT_TEMPLATE_JSON, TOKENIZER_CONFIG)
"""Template-bearing files, in the E2 precedence order."""

DEFAULT_NAME = "default"
TOOL_USE_NAME = "tool_use"


@dataclass(frozen=True)
class TemplateSource:
    """One chat template found in a snapshot: the file it came from, its name (``default``
    for a plain string, the entry's ``name`` in the list form) and its text."""

    origin: str
    name: str
    text: str

    @property
    def label(self) -> str:
        """``origin[name]``, e.g. ``tokenizer_config.json[tool_use]``."""
        return f"{self.origin}[{self.name}]"


@dataclass(frozen=True)
class ModelCard:
    """What the agent knows and advertises about one model folder (E1, E2, E3).

    ``sources`` and ``reports`` are index-aligned: ``reports[i]`` is the self-check of
    ``sources[i]``. Verdicts are tri-state (None = unknown, no template); see the module
    docstring for how several sources are aggregated."""

    id: str
    path: Path
    is_vision: bool
    template_render_ok: bool | None
    cap_system: bool | None
    cap_tools: bool | None
    cap_vision: bool | None
    sources: tuple[TemplateSource, ...]
    reports: tuple[CheckReport, ...]
    bos_token: str
    eos_token: str
    problems: tuple[str, ...]
    strictness: Strictness

    def source_index(self, *, tools: bool) -> int | None:
        """Index of the source that renders a request (tools or plain); None if none."""
        return _pick_source(self.sources, tools=tools)


def _pick_source(sources: Sequence[TemplateSource], *, tools: bool) -> int | None:
    if not sources:
        return None
    names = [s.name for s in sources]
    plain = names.index(DEFAULT_NAME) if DEFAULT_NAME in names else 0
    if tools and TOOL_USE_NAME in names:
        return names.index(TOOL_USE_NAME)
    return plain


# ---------------------------------------------------------------------------------------
# Reading a folder
# ---------------------------------------------------------------------------------------


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """The file's JSON object; None when missing. Unreadable, invalid or non-object JSON
    is recorded in ``problems`` and also gives None."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        problems.append(f"{path.name}: cannot be read as JSON ({exc})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name}: top level is not a JSON object")
        return None
    return data


def _json_sources(
    origin: str, data: Mapping[str, Any], problems: list[str]
) -> list[TemplateSource]:
    value = data.get("chat_template")
    if value is None:
        return []
    if isinstance(value, str):
        return [TemplateSource(origin, DEFAULT_NAME, value)] if value.strip() else []
    if not isinstance(value, list):
        problems.append(f"{origin}: chat_template is neither a string nor a list")
        return []
    sources = []
    for position, entry in enumerate(value):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("template"), str):
            problems.append(f"{origin}: chat_template entry {position} has no template string")
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            name = f"entry{position}"
        if entry["template"].strip():
            sources.append(TemplateSource(origin, name, entry["template"]))
    return sources


def _collect_sources(
    folder: Path, tokenizer_config: Mapping[str, Any] | None, problems: list[str]
) -> list[TemplateSource]:
    sources: list[TemplateSource] = []
    jinja = folder / JINJA_FILE
    if jinja.is_file():
        try:
            text = jinja.read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:
            problems.append(f"{JINJA_FILE}: cannot be read ({exc})")
        else:
            if text.strip():  # an empty file is no template (the engine skips it too)
                sources.append(TemplateSource(JINJA_FILE, DEFAULT_NAME, text))
    chat_json = _read_json(folder / CHAT_TEMPLATE_JSON, problems)
    if chat_json is not None:
        sources += _json_sources(CHAT_TEMPLATE_JSON, chat_json, problems)
    if tokenizer_config is not None:
        sources += _json_sources(TOKENIZER_CONFIG, tokenizer_config, problems)
    return sources


def _token(value: Any) -> str:
    """A special token in the plain string or the added-token ``{"content": ...}`` form."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return ""


def _looks_like_model(folder: Path) -> bool:
    return folder.is_dir() and any(
        (folder / name).is_file() for name in (CONFIG_JSON, *TEMPLATE_FILES)
    )


def _all_true(values: Iterable[bool | None]) -> bool:
    return all(value is True for value in values)


def scan_model(
    folder: Path,
    *,
    model_id: str | None = None,
    strictness: Strictness = Strictness.STRICT,
    now: Clock = datetime.now,
) -> ModelCard:
    """Scan one snapshot folder (id defaults to the folder name). A missing folder gives a
    card with every verdict None and the problem recorded. Never raises for folder
    contents."""
    model = model_id or folder.name
    if not folder.is_dir():
        return ModelCard(
            id=model,
            path=folder,
            is_vision=False,
            template_render_ok=None,
            cap_system=None,
            cap_tools=None,
            cap_vision=None,
            sources=(),
            reports=(),
            bos_token="",
            eos_token="",
            problems=(f"{folder}: folder not found",),
            strictness=strictness,
        )

    config_problems: list[str] = []
    config = _read_json(folder / CONFIG_JSON, config_problems)
    # A null vision_config means "no vision tower" in some configs; only a value counts.
    is_vision = config is not None and config.get("vision_config") is not None

    template_problems: list[str] = []
    tokenizer_config = _read_json(folder / TOKENIZER_CONFIG, template_problems)
    tokens = tokenizer_config or {}
    bos, eos = _token(tokens.get("bos_token")), _token(tokens.get("eos_token"))
    sources = _collect_sources(folder, tokenizer_config, template_problems)
    reports = [
        self_check(
            source.text,
            is_vision=is_vision,
            bos_token=bos,
            eos_token=eos,
            strictness=strictness,
            now=now,
        )
        for source in sources
    ]

    render_ok: bool | None
    cap_system = cap_tools = cap_vision = None
    plain, tool = _pick_source(sources, tools=False), _pick_source(sources, tools=True)
    if plain is None or tool is None:
        render_ok = False if template_problems else None
    else:
        used = [reports[plain], reports[tool]]
        render_ok = not template_problems and _all_true(r.template_render_ok for r in used)
        cap_system = _all_true(r.cap_system for r in used)
        cap_tools = reports[tool].cap_tools
        cap_vision = _all_true(r.cap_vision for r in used) if is_vision else None

    return ModelCard(
        id=model,
        path=folder,
        is_vision=is_vision,
        template_render_ok=render_ok,
        cap_system=cap_system,
        cap_tools=cap_tools,
        cap_vision=cap_vision,
        sources=tuple(sources),
        reports=tuple(reports),
        bos_token=bos,
        eos_token=eos,
        problems=tuple(config_problems + template_problems),
        strictness=strictness,
    )


def scan_models(
    root: Path, *, strictness: Strictness = Strictness.STRICT, now: Clock = datetime.now
) -> list[ModelCard]:
    """One card per immediate subfolder of ``root`` that holds ``config.json`` or a
    template file, sorted by id. A missing or non-directory ``root`` gives []."""
    if not root.is_dir():
        return []
    folders = sorted(p for p in root.iterdir() if _looks_like_model(p))
    return [scan_model(folder, strictness=strictness, now=now) for folder in folders]


# ---------------------------------------------------------------------------------------
# Rendering requests
# ---------------------------------------------------------------------------------------


class TemplateCache:
    """Compiled templates keyed by (source text, strictness), owned by whoever renders
    (one per agent). Holds at most ``max_entries``; the oldest entry goes first."""

    def __init__(self, *, max_entries: int = 64, now: Clock = datetime.now) -> None:
        self._entries: dict[tuple[str, Strictness], ChatTemplate] = {}
        self._max_entries = max_entries
        self._now = now

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, source: str, strictness: Strictness) -> ChatTemplate:
        """The compiled template; raises TemplateCompileError (not cached) if it does not
        compile."""
        key = (source, strictness)
        found = self._entries.get(key)
        if found is None:
            found = compile_template(source, strictness, now=self._now)
            if len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = found
        return found


def render_prompt(
    card: ModelCard,
    messages: Sequence[Message],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    strictness: Strictness | None = None,
    cache: TemplateCache | None = None,
) -> str:
    """Render a canonical chat request exactly as the self-check renders its fixtures:
    the source picked for this request shape (tools = non-empty ``tools``), messages
    shaped by ``template_messages``, system text folded into the first user message when
    that source refuses system, the card's special tokens, ``add_generation_prompt`` true,
    and the card's strictness unless ``strictness`` is given.

    Raises TemplateRenderError carrying the template's message when the model has no
    template, the template does not compile, or rendering fails (the agent turns it into
    a 500 error frame)."""
    has_tools = bool(tools)
    index = card.source_index(tools=has_tools)
    if index is None:
        raise TemplateRenderError(f"model {card.id} has no chat template")
    source, report = card.sources[index], card.reports[index]
    mode = strictness if strictness is not None else card.strictness
    try:
        template = (cache if cache is not None else TemplateCache()).get(source.text, mode)
    except TemplateCompileError as exc:
        raise TemplateRenderError(f"chat template does not compile: {exc.message}") from exc

    shaped = template_messages(messages)
    if not report.cap_system and any(m.get("role") == "system" for m in shaped):
        shaped = fold_system(shaped)
    return render(
        template,
        shaped,
        tools=tools if has_tools else None,
        bos_token=card.bos_token,
        eos_token=card.eos_token,
    )


# ---------------------------------------------------------------------------------------
# Human-readable report for `python -m provider_agent check DIR`
# ---------------------------------------------------------------------------------------


def _tri(value: bool | None) -> str:
    return "absent" if value is None else ("true" if value else "FALSE")


def _report_lines(report: CheckReport) -> list[str]:
    if report.compile_error is not None:
        return [f"      compile  FAILED  {report.compile_error}"]
    lines = []
    for group in FixtureGroup:
        result = report.result(group)
        if result is None:
            lines.append(f"      {group.value:<7}  skipped (not a vision model)")
        elif result.ok:
            lines.append(f"      {group.value:<7}  ok")
        else:
            where = f"fixture={result.fixture}"
            if result.filter_name:
                where += f" filter={result.filter_name}"
                if result.refused:
                    where += f" got={result.refused}"
            lines.append(f"      {group.value:<7}  FAILED  {where}: {result.error}")
    return lines


def format_check_report(cards: Sequence[ModelCard]) -> str:
    """A plain-text report: per model its advertised verdicts, then per template source
    which requests it renders and each fixture group's result -- on failure the fixture,
    the strict filter and the kind of value it refused (if that was the cause, e.g.
    ``fixture=tool_declaration filter=upper got=list``) and the template's message."""
    if not cards:
        return "no models found\n"
    out: list[str] = []
    for card in cards:
        vision = _tri(card.cap_vision) if card.is_vision else "n/a"
        out.append(
            f"{card.id}  vision_model={'yes' if card.is_vision else 'no'}  "
            f"check={card.strictness.value}  template_render_ok={_tri(card.template_render_ok)}  "
            f"system={_tri(card.cap_system)}  tools={_tri(card.cap_tools)}  vision={vision}"
        )
        out.append(f"  path {card.path}  bos={card.bos_token!r}  eos={card.eos_token!r}")
        if not card.sources:
            out.append("  no chat template")
        plain, tool = card.source_index(tools=False), card.source_index(tools=True)
        for i, (source, report) in enumerate(zip(card.sources, card.reports, strict=True)):
            serves = [kind for kind, at in (("plain", plain), ("tools", tool)) if at == i]
            role = f"renders {' + '.join(serves)} requests" if serves else "not used for requests"
            out.append(f"  [{i + 1}] {source.label}  ({role})")
            out += _report_lines(report)
        out += [f"  problem: {problem}" for problem in card.problems]
    return "\n".join(out) + "\n"
