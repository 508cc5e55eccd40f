"""Which module may import which (docs/architecture.md, "Layers"), read from the source: Cove never imports the hub
or the playground, the pure modules import only each other, pydantic and the standard library, and the client
(``cove``) and the control plane meet only in the CLI and in the shapes they share."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Pure: values in, values out; no database, no I/O, no client of anything (docs/architecture.md).
PURE = {
    "studio.values",
    "studio.chats",
    "studio.tokens",
    "studio.access",
    "studio.names",
    "studio.errors",
    "studio.pools",
    "studio.memplan",
    "studio.benchmark",
    "studio.bench_results",
    "studio.gate",
    "studio.scoring",
    "studio.sizing",
    "studio.kvlog",
    "studio.runtimes",
    "studio.pods",
    "studio.profiles",
    "studio.backends.base",
    "studio.backends.kubernetes.manifests",
    "studio.backends.kubernetes.conditions",
    "studio.gateway.protocol",
    "studio.gateway.routes",
    "studio.prices",
}
# What a pure module may import besides other pure modules.
PURE_MAY_USE = {"pydantic", "orjson", "jsonschema"}  # jsonschema: the evaluation scorer that checks answers
# What the client (`cove`, installed where no control plane runs) may import of studio: the pure modules and the
# API's typed shapes.
CLIENT_MAY_USE = PURE | {"studio", "studio.models", "studio.specs"}  # specs: the documents `cove apply` reads
# What the control plane's core (all of studio but its CLI) may import of the client: where a login is kept.
CORE_MAY_USE_OF_CLIENT = {"cove.login"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (Cove's code imports by absolute name)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}: a relative import"
            found.add(node.module or "")
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def first_party(name: str) -> bool:
    return name.split(".")[0] in {"studio", "hub", "playground", "cove"}


@pytest.mark.parametrize("path", sources("studio"), ids=lambda p: module_name(p))
def test_cove_never_imports_the_hub_or_the_playground(path: Path) -> None:
    outside = sorted(n for n in imports_of(path) if n.split(".")[0] in {"hub", "playground"})
    assert outside == [], f"{module_name(path)} imports {outside}: the hub and the playground depend on studio"


def owner_of(imported: str, known: set[str]) -> str:
    """The module an import names: itself, or the module it takes a name from (``studio.models.ImagePublic``)."""
    return imported if imported in known else imported.rsplit(".", 1)[0]


@pytest.mark.parametrize(
    "path", [p for p in sources("studio") if "cli" not in p.relative_to(ROOT).parts], ids=lambda p: module_name(p)
)
def test_the_core_never_imports_the_client(path: Path) -> None:
    known = {module_name(p) for p in sources("cove")}
    found = {n for n in imports_of(path) if n.split(".")[0] == "cove"}
    allowed = {n for n in found if owner_of(n, known) in CORE_MAY_USE_OF_CLIENT}
    # `from cove import login` names the package too: that alone is no import of the client.
    wrong = sorted(n for n in found - allowed if not (n == "cove" and allowed))
    assert wrong == [], f"{module_name(path)} imports {wrong}: only the CLI talks to the API through the client"


@pytest.mark.parametrize("path", sources("cove"), ids=lambda p: module_name(p))
def test_the_client_imports_only_the_shapes_it_shares_with_studio(path: Path) -> None:
    known = {module_name(p) for p in sources("studio")}
    wrong = sorted(
        n for n in imports_of(path) if n.split(".")[0] == "studio" and owner_of(n, known) not in CLIENT_MAY_USE
    )
    assert wrong == [], f"{module_name(path)} imports {wrong}: the client knows studio's errors, values and models"


@pytest.mark.parametrize("name", sorted(PURE))
def test_pure_modules_import_only_pure_modules(name: str) -> None:
    path = ROOT / (name.replace(".", "/") + ".py")
    known = {module_name(p) for p in sources("studio")}
    wrong = []
    for imported in sorted(imports_of(path)):
        top = imported.split(".")[0]
        if first_party(imported):
            owner = imported if imported in known else imported.rsplit(".", 1)[0]
            if owner not in PURE and owner != "studio":
                wrong.append(imported)
        elif top not in sys.stdlib_module_names and top not in PURE_MAY_USE and top != "__future__":
            wrong.append(imported)
    assert wrong == [], f"{name} is pure but imports {wrong}"


def test_importing_the_pure_modules_loads_no_database_or_cluster_client() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in sorted(PURE))
        + "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlmodel', 'sqlalchemy', 'alembic', 'kubernetes',"
        " 'streamlit', 'hub', 'playground'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"
