"""Rules E2 (model scan), E3 verdicts per model, and E4's render step (render_prompt)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provider_agent.scan import (
    ModelCard,
    TemplateCache,
    TemplateSource,
    format_check_report,
    render_prompt,
    scan_model,
    scan_models,
)
from provider_agent.templates import (
    Strictness,
    TemplateCompileError,
    TemplateRenderError,
    canonical_tool,
)

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "tests" / "fixtures" / "templates"
STACK_MODELS = REPO / "stack" / "models"

GEMMA = (TEMPLATES / "gemma_style.jinja").read_text(encoding="utf-8")
INCIDENT = (TEMPLATES / "incident_tool_args.jinja").read_text(encoding="utf-8")
NO_SYSTEM = (TEMPLATES / "no_system.jinja").read_text(encoding="utf-8")
BROKEN = (TEMPLATES / "broken_syntax.jinja").read_text(encoding="utf-8")
CHATML = (TEMPLATES / "plain_chatml.jinja").read_text(encoding="utf-8")
BOS_PROBE = (TEMPLATES / "bos_probe.jinja").read_text(encoding="utf-8")
VISION_CONFIG = {"model_type": "x", "vision_config": {"image_size": 224}}

HELLO = [{"role": "user", "content": "Hello"}]
TOOL_CALL_TURNS: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Oslo?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_9",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "Oslo"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_9", "name": "get_weather", "content": "cold"},
]


def make_model(
    root: Path,
    name: str = "m",
    *,
    config: Any = None,
    jinja: str | bytes | None = None,
    chat_template_json: Any = None,
    tokenizer_config: Any = None,
) -> Path:
    """A snapshot folder; JSON values given as str are written verbatim (to make them invalid)."""
    folder = root / name
    folder.mkdir(parents=True)
    for filename, value in (
        ("config.json", config),
        ("chat_template.json", chat_template_json),
        ("tokenizer_config.json", tokenizer_config),
    ):
        if value is not None:
            text = value if isinstance(value, str) else json.dumps(value)
            (folder / filename).write_text(text, encoding="utf-8")
    if isinstance(jinja, bytes):
        (folder / "chat_template.jinja").write_bytes(jinja)
    elif jinja is not None:
        (folder / "chat_template.jinja").write_text(jinja, encoding="utf-8")
    return folder


def verdicts(card: ModelCard) -> tuple[bool | None, ...]:
    return (card.template_render_ok, card.cap_system, card.cap_tools, card.cap_vision)


def labels(card: ModelCard) -> list[str]:
    return [source.label for source in card.sources]


# --- discovery --------------------------------------------------------------------------


def test_e2_missing_root_gives_no_models(tmp_path):
    assert scan_models(tmp_path / "nope") == []
    (tmp_path / "file").write_text("x")
    assert scan_models(tmp_path / "file") == []


def test_e2_missing_model_folder_is_absent_not_a_crash(tmp_path):
    card = scan_model(tmp_path / "gone")
    assert card.id == "gone"
    assert verdicts(card) == (None, None, None, None)
    assert card.sources == () and card.is_vision is False
    assert len(card.problems) == 1 and "not found" in card.problems[0]


def test_e2_each_snapshot_subfolder_is_one_model_sorted_by_id(tmp_path):
    make_model(tmp_path, "b-model", config={})
    make_model(tmp_path, "a-model", jinja=GEMMA)
    make_model(tmp_path, "c-model", tokenizer_config={"bos_token": "<s>"})
    (tmp_path / "notes").mkdir()  # no snapshot files: not a model
    (tmp_path / "notes" / "README.md").write_text("hi")
    (tmp_path / "stray.json").write_text("{}")  # a file, not a folder
    cards = scan_models(tmp_path)
    assert [c.id for c in cards] == ["a-model", "b-model", "c-model"]
    assert cards[0].path == tmp_path / "a-model"


def test_e2_model_id_can_be_overridden_for_a_single_folder(tmp_path):
    folder = make_model(tmp_path, "snap-123", jinja=GEMMA)
    assert scan_model(folder, model_id="org/model").id == "org/model"


# --- template sources -------------------------------------------------------------------


def test_e2_no_template_is_absent(tmp_path):
    make_model(tmp_path, config={}, tokenizer_config={"eos_token": "</s>"})
    (card,) = scan_models(tmp_path)
    assert verdicts(card) == (None, None, None, None)
    assert card.sources == () and card.problems == ()


def test_e2_empty_jinja_file_is_no_template(tmp_path):
    make_model(tmp_path, jinja="  \n", chat_template_json={"chat_template": ""})
    (card,) = scan_models(tmp_path)
    assert card.template_render_ok is None


def test_e2_chat_template_json_string_form_is_collected(tmp_path):
    make_model(tmp_path, chat_template_json={"chat_template": GEMMA})
    (card,) = scan_models(tmp_path)
    assert card.sources == (TemplateSource("chat_template.json", "default", GEMMA),)
    assert verdicts(card) == (True, True, True, None)


def test_e2_chat_template_json_list_form_is_collected(tmp_path):
    entries = [{"name": "default", "template": CHATML}, {"name": "tool_use", "template": GEMMA}]
    make_model(tmp_path, chat_template_json={"chat_template": entries})
    (card,) = scan_models(tmp_path)
    assert labels(card) == ["chat_template.json[default]", "chat_template.json[tool_use]"]


def test_e2_all_sources_are_collected_jinja_first(tmp_path):
    make_model(
        tmp_path,
        tokenizer_config={
            "chat_template": [
                {"name": "default", "template": CHATML},
                {"name": "rag", "template": CHATML},
            ]
        },
        chat_template_json={"chat_template": CHATML},
        jinja=GEMMA,
    )
    (card,) = scan_models(tmp_path)
    assert labels(card) == [
        "chat_template.jinja[default]",
        "chat_template.json[default]",
        "tokenizer_config.json[default]",
        "tokenizer_config.json[rag]",
    ]
    assert len(card.reports) == 4
    # the jinja file wins: it renders plain and tools requests
    assert card.source_index(tools=False) == 0 and card.source_index(tools=True) == 0
    assert render_prompt(card, HELLO).startswith("<start_of_turn>user")


def test_e2_tokenizer_config_list_form_with_two_entries(tmp_path):
    entries = [{"name": "default", "template": CHATML}, {"name": "tool_use", "template": GEMMA}]
    make_model(tmp_path, tokenizer_config={"chat_template": entries})
    (card,) = scan_models(tmp_path)
    assert labels(card) == ["tokenizer_config.json[default]", "tokenizer_config.json[tool_use]"]
    assert verdicts(card) == (True, True, True, None)
    assert render_prompt(card, HELLO).startswith("<|im_start|>user")
    tools_prompt = render_prompt(card, HELLO, tools=[canonical_tool()])
    assert "<start_function_declaration>declaration:get_weather" in tools_prompt


def test_e2_broken_tool_use_entry_fences_tools_only(tmp_path):
    entries = [{"name": "default", "template": GEMMA}, {"name": "tool_use", "template": INCIDENT}]
    make_model(tmp_path, tokenizer_config={"chat_template": entries})
    (card,) = scan_models(tmp_path)
    assert verdicts(card) == (True, True, False, None)
    assert render_prompt(card, HELLO)  # plain chat still renders
    with pytest.raises(TemplateRenderError) as caught:
        render_prompt(card, TOOL_CALL_TURNS, tools=[canonical_tool()])
    assert caught.value.message == "trim filter requires string"
    assert caught.value.filter_name == "trim"


def test_e2_tool_use_entry_that_does_not_compile_is_a_broken_template(tmp_path):
    # A source that renders requests and cannot render plain chat is broken for every shape.
    entries = [{"name": "default", "template": GEMMA}, {"name": "tool_use", "template": BROKEN}]
    make_model(tmp_path, tokenizer_config={"chat_template": entries})
    (card,) = scan_models(tmp_path)
    assert verdicts(card) == (False, False, False, None)


def test_e2_sources_that_render_no_request_do_not_move_the_verdicts(tmp_path):
    entries = [{"name": "default", "template": GEMMA}, {"name": "rag", "template": BROKEN}]
    make_model(tmp_path, tokenizer_config={"chat_template": entries})
    (card,) = scan_models(tmp_path)
    assert verdicts(card) == (True, True, True, None)
    assert card.reports[1].compile_error is not None
    assert "not used for requests" in format_check_report([card])


def test_e2_list_form_without_a_default_name_uses_the_first_entry(tmp_path):
    entries = [{"name": "chat", "template": GEMMA}, {"template": CHATML}]
    make_model(tmp_path, tokenizer_config={"chat_template": entries})
    (card,) = scan_models(tmp_path)
    assert labels(card) == ["tokenizer_config.json[chat]", "tokenizer_config.json[entry1]"]
    assert card.source_index(tools=False) == 0 and card.source_index(tools=True) == 0


def test_e2_template_file_that_cannot_be_read_is_reported_and_fails_the_model(tmp_path):
    make_model(tmp_path, "bad-utf8", jinja=b"\xff\xfe{{ x }}")
    make_model(tmp_path, "bad-json", jinja=GEMMA, tokenizer_config="{not json")
    make_model(tmp_path, "bad-shape", chat_template_json={"chat_template": 42})
    make_model(tmp_path, "bad-entry", tokenizer_config={"chat_template": [{"name": "x"}, "y"]})
    make_model(tmp_path, "not-object", chat_template_json="[1, 2]")
    cards = {card.id: card for card in scan_models(tmp_path)}
    assert {cid: card.template_render_ok for cid, card in cards.items()} == {
        "bad-utf8": False,
        "bad-json": False,
        "bad-shape": False,
        "bad-entry": False,
        "not-object": False,
    }
    assert "chat_template.jinja: cannot be read" in cards["bad-utf8"].problems[0]
    assert "tokenizer_config.json: cannot be read as JSON" in cards["bad-json"].problems[0]
    assert cards["bad-json"].cap_tools is True  # the jinja source itself is fine
    assert "neither a string nor a list" in cards["bad-shape"].problems[0]
    assert len(cards["bad-entry"].problems) == 2
    assert "not a JSON object" in cards["not-object"].problems[0]


def test_e2_broken_config_json_is_reported_but_does_not_fail_the_template(tmp_path):
    make_model(tmp_path, config="{oops", jinja=GEMMA)
    (card,) = scan_models(tmp_path)
    assert card.is_vision is False
    assert card.template_render_ok is True
    assert "config.json" in card.problems[0]


# --- vision and tokens ------------------------------------------------------------------


def test_e2_vision_comes_from_vision_config(tmp_path):
    make_model(tmp_path, "text", config={"model_type": "x"}, jinja=GEMMA)
    make_model(tmp_path, "vision", config=VISION_CONFIG, jinja=GEMMA)
    make_model(tmp_path, "null-vision", config={"vision_config": None}, jinja=GEMMA)
    cards = {card.id: card for card in scan_models(tmp_path)}
    assert (cards["text"].is_vision, cards["text"].cap_vision) == (False, None)
    assert (cards["vision"].is_vision, cards["vision"].cap_vision) == (True, True)
    assert cards["null-vision"].is_vision is False


def test_e3_content_parts_are_judged_only_for_vision_models(tmp_path):
    parts_refusing = "{% for m in messages %}{{ m['content'] | trim }}{% endfor %}"
    make_model(tmp_path, "text", config={}, jinja=parts_refusing)
    make_model(tmp_path, "vision", config=VISION_CONFIG, jinja=parts_refusing)
    text, vision = scan_models(tmp_path)
    assert verdicts(text) == (True, True, True, None)
    assert verdicts(vision) == (True, True, True, False)


@pytest.mark.parametrize(
    ("tokenizer_config", "bos", "eos"),
    [
        ({"bos_token": "<s>", "eos_token": "</s>"}, "<s>", "</s>"),
        (
            {"bos_token": {"content": "<s>", "special": True}, "eos_token": {"content": "</s>"}},
            "<s>",
            "</s>",
        ),
        ({}, "", ""),
        ({"bos_token": None, "eos_token": {"special": True}}, "", ""),
        ({"bos_token": 7}, "", ""),
    ],
)
def test_e3_special_tokens_from_tokenizer_config(tmp_path, tokenizer_config, bos, eos):
    make_model(tmp_path, tokenizer_config=tokenizer_config, jinja=BOS_PROBE)
    (card,) = scan_models(tmp_path)
    assert (card.bos_token, card.eos_token) == (bos, eos)
    assert render_prompt(card, HELLO) == f"[{bos}]Hello[{eos}]"


def test_e3_check_sees_the_bos_token_from_tokenizer_config(tmp_path):
    needs_bos = "{% if bos_token != '<bos>' %}{{ raise_exception('no bos') }}{% endif %}x"
    make_model(tmp_path, "plain", tokenizer_config={"bos_token": "<bos>"}, jinja=needs_bos)
    make_model(
        tmp_path, "added", tokenizer_config={"bos_token": {"content": "<bos>"}}, jinja=needs_bos
    )
    make_model(tmp_path, "none", config={}, jinja=needs_bos)
    cards = {card.id: card.template_render_ok for card in scan_models(tmp_path)}
    assert cards == {"added": True, "none": False, "plain": True}


# --- verdicts of E3 per model -----------------------------------------------------------


def test_e3_gemma_style_model_has_every_capability(tmp_path):
    make_model(tmp_path, config=VISION_CONFIG, jinja=GEMMA, tokenizer_config={"bos_token": "<bos>"})
    (card,) = scan_models(tmp_path)
    assert verdicts(card) == (True, True, True, True)
    assert card.strictness is Strictness.STRICT


def test_e3_incident_class_model_routes_plain_chat_but_not_tools(tmp_path):
    make_model(tmp_path, config={}, jinja=INCIDENT)
    (card,) = scan_models(tmp_path)
    assert verdicts(card) == (True, True, False, None)


def test_e3_incident_class_is_only_caught_by_a_strict_check(tmp_path):
    make_model(tmp_path, config={}, jinja=INCIDENT)
    (card,) = scan_models(tmp_path, strictness=Strictness.LENIENT)
    assert card.cap_tools is True
    assert card.strictness is Strictness.LENIENT


def test_e3_template_that_does_not_compile_is_false(tmp_path):
    make_model(tmp_path, config=VISION_CONFIG, jinja=BROKEN)
    (card,) = scan_models(tmp_path)
    assert verdicts(card) == (False, False, False, False)
    with pytest.raises(TemplateRenderError, match="does not compile"):
        render_prompt(card, HELLO)


def test_e3_system_refusing_model_serves_system_requests_folded(tmp_path):
    make_model(tmp_path, config={}, jinja=NO_SYSTEM)
    (card,) = scan_models(tmp_path)
    assert card.template_render_ok is True and card.cap_system is False
    prompt = render_prompt(card, [{"role": "system", "content": "Be terse."}, *HELLO])
    assert prompt == "<start_of_turn>user\nBe terse.\n\nHello<end_of_turn>\n<start_of_turn>model\n"


def test_e3_system_capable_model_keeps_the_system_turn(tmp_path):
    make_model(tmp_path, config={}, jinja=GEMMA)
    (card,) = scan_models(tmp_path)
    prompt = render_prompt(card, [{"role": "system", "content": "Be terse."}, *HELLO])
    assert prompt.startswith("<start_of_turn>system\nBe terse.<end_of_turn>")


# --- render_prompt (E4) -----------------------------------------------------------------


def test_e4_render_prompt_renders_a_canonical_tool_flow_as_the_check_does(tmp_path):
    make_model(tmp_path, config={}, jinja=GEMMA, tokenizer_config={"bos_token": "<bos>"})
    (card,) = scan_models(tmp_path)
    prompt = render_prompt(card, TOOL_CALL_TURNS, tools=[canonical_tool()])
    assert prompt.startswith("<bos><start_of_turn>system\n<start_function_declaration>")
    # string arguments from the wire reach the template as a dict, as in the fixture
    assert "<start_function_call>call:get_weather{location:<escape>Oslo<escape>}" in prompt
    assert "response:get_weather{value:<escape>cold<escape>}" in prompt
    assert prompt.endswith("<start_of_turn>model\n")


def test_e4_empty_tools_list_is_a_plain_request(tmp_path):
    entries = [{"name": "default", "template": CHATML}, {"name": "tool_use", "template": BROKEN}]
    make_model(tmp_path, tokenizer_config={"chat_template": entries})
    (card,) = scan_models(tmp_path)
    assert render_prompt(card, HELLO, tools=[]).startswith("<|im_start|>user")
    with pytest.raises(TemplateRenderError):
        render_prompt(card, HELLO, tools=[canonical_tool()])


def test_e4_render_failure_carries_the_template_message(tmp_path):
    make_model(tmp_path, config={}, jinja=(TEMPLATES / "raises_on_tool_role.jinja").read_text())
    (card,) = scan_models(tmp_path)
    with pytest.raises(TemplateRenderError) as caught:
        render_prompt(card, TOOL_CALL_TURNS, tools=[canonical_tool()])
    assert caught.value.message == "Tool responses are not supported by this template"


def test_e4_render_prompt_without_template_is_a_render_error(tmp_path):
    make_model(tmp_path, "bare", config={})
    (card,) = scan_models(tmp_path)
    with pytest.raises(TemplateRenderError, match="bare has no chat template"):
        render_prompt(card, HELLO)


def test_e4_render_prompt_uses_the_card_strictness_unless_told(tmp_path):
    make_model(tmp_path, config={}, jinja=INCIDENT)
    (card,) = scan_models(tmp_path)
    with pytest.raises(TemplateRenderError):
        render_prompt(card, TOOL_CALL_TURNS, tools=[canonical_tool()])
    lenient = render_prompt(
        card, TOOL_CALL_TURNS, tools=[canonical_tool()], strictness=Strictness.LENIENT
    )
    assert "{'location': 'Oslo'}" in lenient


def test_e4_unrepaired_nullable_type_crashes_strict_render_only(tmp_path):
    raw = canonical_tool()
    raw["function"]["parameters"]["properties"]["location"]["type"] = ["string", "null"]
    make_model(tmp_path, config={}, jinja=GEMMA)
    (card,) = scan_models(tmp_path)
    with pytest.raises(TemplateRenderError) as caught:
        render_prompt(card, HELLO, tools=[raw])
    assert caught.value.message == "upper filter requires string"
    lenient = render_prompt(card, HELLO, tools=[raw], strictness=Strictness.LENIENT)
    assert "['STRING', 'NULL']" in lenient


def test_e4_template_cache_compiles_once_per_source_and_strictness(tmp_path):
    make_model(tmp_path, config={}, jinja=GEMMA)
    (card,) = scan_models(tmp_path)
    cache = TemplateCache()
    first = render_prompt(card, HELLO, cache=cache)
    compiled = cache.get(GEMMA, Strictness.STRICT)
    assert render_prompt(card, HELLO, cache=cache) == first
    assert cache.get(GEMMA, Strictness.STRICT) is compiled
    assert len(cache) == 1
    assert cache.get(GEMMA, Strictness.LENIENT) is not compiled
    assert len(cache) == 2


def test_e4_template_cache_is_bounded_and_does_not_keep_failures():
    cache = TemplateCache(max_entries=2)
    a = cache.get("a", Strictness.STRICT)
    cache.get("b", Strictness.STRICT)
    cache.get("c", Strictness.STRICT)
    assert len(cache) == 2
    assert cache.get("a", Strictness.STRICT) is not a  # evicted, compiled again
    with pytest.raises(TemplateCompileError):
        cache.get(BROKEN, Strictness.STRICT)
    assert len(cache) == 2


# --- check report -----------------------------------------------------------------------


def test_e3_check_report_shows_each_model_source_group_and_failure(tmp_path):
    entries = [{"name": "default", "template": GEMMA}, {"name": "tool_use", "template": INCIDENT}]
    make_model(tmp_path, "incident", config={}, tokenizer_config={"chat_template": entries})
    make_model(tmp_path, "broken", config=VISION_CONFIG, jinja=BROKEN)
    make_model(tmp_path, "bare", config={})
    make_model(tmp_path, "unreadable", chat_template_json="{")
    text = format_check_report(scan_models(tmp_path))
    lines = text.splitlines()
    assert any(
        line.startswith("incident ") and "template_render_ok=true" in line and "tools=FALSE" in line
        for line in lines
    )
    assert "  [1] tokenizer_config.json[default]  (renders plain requests)" in lines
    assert "  [2] tokenizer_config.json[tool_use]  (renders tools requests)" in lines
    assert (
        "      tools    FAILED  fixture=tool_flow filter=trim got=dict: trim filter requires string"
        in lines
    )
    assert "      vision   skipped (not a vision model)" in lines
    assert any(line.startswith("      compile  FAILED  line ") for line in lines)
    assert any(line.startswith("broken ") and "vision=FALSE" in line for line in lines)
    assert any(line.startswith("bare ") and "template_render_ok=absent" in line for line in lines)
    assert "  no chat template" in lines
    assert any(line.startswith("  problem: chat_template.json: cannot be read") for line in lines)


def test_e3_check_report_names_fixture_filter_and_refused_value_only_when_strict(tmp_path):
    # A template only a strict engine crashes on: `check` (strict by default) flags it and
    # says where; the lenient check, like Jinja2, passes it.
    make_model(
        tmp_path, "enumtrim", config={}, jinja=(TEMPLATES / "enum_option_trim.jinja").read_text()
    )
    strict = format_check_report(scan_models(tmp_path)).splitlines()
    assert any("check=strict" in line and "tools=FALSE" in line for line in strict)
    assert (
        "      tools    FAILED  fixture=tool_declaration filter=trim got=int: "
        "trim filter requires string"
    ) in strict
    lenient = format_check_report(scan_models(tmp_path, strictness=Strictness.LENIENT))
    assert "check=lenient" in lenient and "tools=true" in lenient
    assert "      tools    ok" in lenient.splitlines()


def test_e3_check_report_for_no_models():
    assert format_check_report([]) == "no models found\n"


# --- the simulated models the stack serves ------------------------------------------------


def test_e3_stack_models_pass_every_check():
    cards = {card.id: card for card in scan_models(STACK_MODELS)}
    assert set(cards) == {"hedgerow-sim-1", "hedgerow-sim-vision-1"}
    text, vision = cards["hedgerow-sim-1"], cards["hedgerow-sim-vision-1"]
    assert (text.is_vision, text.bos_token, text.eos_token) == (False, "<bos>", "<eos>")
    assert verdicts(text) == (True, True, True, None)
    assert (vision.is_vision, vision.bos_token, vision.eos_token) == (True, "", "<|im_end|>")
    assert verdicts(vision) == (True, True, True, True)
    for card in cards.values():
        assert card.problems == ()
        assert [s.label for s in card.sources] == ["chat_template.jinja[default]"]
        for report in card.reports:
            assert all(group.ok for group in report.groups)


@pytest.mark.parametrize("strictness", list(Strictness))
def test_e3_stack_models_pass_in_both_strictness_modes(strictness):
    for card in scan_models(STACK_MODELS, strictness=strictness):
        assert card.template_render_ok and card.cap_system and card.cap_tools
        assert card.cap_vision is (True if card.is_vision else None)


def test_e4_stack_vision_model_renders_image_and_video_requests():
    card = scan_model(STACK_MODELS / "hedgerow-sim-vision-1")
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You see things."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                {"type": "video_url", "video_url": {"url": "https://example.com/a.mp4"}},
            ],
        },
    ]
    prompt = render_prompt(card, messages)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in prompt
    assert "<|vision_start|><|video_pad|><|vision_end|>" in prompt
    assert prompt.startswith("<|im_start|>system\nYou see things.")
