"""`python -m provider_agent check DIR` as a real subprocess (E3 self-check report)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "tests" / "fixtures" / "templates"
SIM_MODEL = REPO / "stack" / "models" / "hedgerow-sim-1"
NO_ASSISTANT = """{%- for message in messages -%}
{%- if message['role'] == 'assistant' -%}
{{ raise_exception('assistant turns are not allowed') }}
{%- endif -%}
<|{{ message['role'] }}|>{{ message['content'] }}
{% endfor -%}
"""


def check(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provider_agent", "check", str(folder), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def model(root: Path, name: str, template: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "test"}')
    (folder / "chat_template.jinja").write_text(template)


def section(out: str, model_id: str) -> str:
    """The report lines of one model (its header up to the next model's header)."""
    match = re.search(rf"^{re.escape(model_id)}  .*?(?=^\S|\Z)", out, re.M | re.S)
    assert match, f"no section for {model_id} in:\n{out}"
    return match.group(0)


def test_e3_check_healthy_folder_prints_every_group_and_exits_0(tmp_path: Path) -> None:
    shutil.copytree(SIM_MODEL, tmp_path / "hedgerow-sim-1")
    model(tmp_path, "incident-1", (TEMPLATES / "incident_tool_args.jinja").read_text())
    result = check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    good = section(result.stdout, "hedgerow-sim-1")
    assert "template_render_ok=true" in good and "tools=true" in good
    for group in ("base", "system", "tools"):
        assert re.search(rf"^\s+{group}\s+ok$", good, re.M), group
    assert re.search(r"^\s+vision\s+skipped", good, re.M)
    # A template that fails only the tool flow is not broken: reported, exit 0, and the
    # report names the fixture and the strict filter that refused.
    incident = section(result.stdout, "incident-1")
    assert "template_render_ok=true" in incident and "tools=FALSE" in incident
    assert re.search(
        r"tools\s+FAILED\s+fixture=\w+ filter=trim\b.*: trim filter requires string", incident
    )


def test_e3_check_broken_template_exits_1_naming_the_failure(tmp_path: Path) -> None:
    shutil.copytree(SIM_MODEL, tmp_path / "hedgerow-sim-1")
    model(tmp_path, "broken-1", (TEMPLATES / "broken_syntax.jinja").read_text())
    model(tmp_path, "no-assistant-1", NO_ASSISTANT)
    result = check(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = section(result.stdout, "broken-1")
    assert "template_render_ok=FALSE" in broken
    assert re.search(r"compile\s+FAILED\s+line \d+: .*endfor", broken)
    refusing = section(result.stdout, "no-assistant-1")
    assert "template_render_ok=FALSE" in refusing
    assert re.search(r"base\s+FAILED\s+fixture=\w+: assistant turns are not allowed", refusing)
    assert "ok" in section(result.stdout, "hedgerow-sim-1"), "healthy models still reported"
    last = result.stdout.splitlines()[-1]
    assert last.startswith("BROKEN:") and "broken-1" in last and "no-assistant-1" in last


def test_check_without_models_exits_2(tmp_path: Path) -> None:
    result = check(tmp_path / "missing")
    assert result.returncode == 2
    assert "no models found" in result.stderr
