"""The package layering the architecture promises (docs/architecture.md, "Packages"):
the provider agent runs on strangers' machines and depends only on the contract and svckit;
the contract depends on no service."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"gateway", "normalizer_svc", "registry_svc", "dispatcher_svc", "provider_agent"}
INTERNAL = SERVICES | {"contract", "svckit", "stack", "bench", "tests"}


def _imported_roots(package: str) -> dict[str, set[str]]:
    """Every internal top-level package each module of `package` imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        roots: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = roots & INTERNAL
    return found


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("provider_agent", {"provider_agent", "contract", "svckit"}),
        ("contract", {"contract"}),
        ("svckit", {"svckit"}),
    ],
)
def test_package_depends_only_on_what_it_may(package: str, allowed: set[str]) -> None:
    modules = _imported_roots(package)
    assert modules, f"no modules found under {package}"
    bad = {path: roots - allowed for path, roots in modules.items() if roots - allowed}
    assert bad == {}
