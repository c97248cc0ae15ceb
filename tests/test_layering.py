"""The package's layering: no module imports a layer it must not depend on.

docs/method.md (section "How the package is layered") gives the layers. Data flows from the
library down to the applications:

- ``typing``, ``losses``, ``metrics``, ``models`` and ``data`` are foundations: they import no
  other layer (beyond ``typing``).
- ``algorithms`` (pure local steps) imports only ``typing`` and ``losses``.
- ``secure`` (the ring and its backends) may use ``algorithms``' tree helpers, nothing else;
  in particular not ``federation``, which calls it.
- ``federation`` (the round) uses ``algorithms``, ``secure``, ``metrics`` and ``losses``, but
  no model and no data set: the federation never needs to change a model.
- ``attacks`` is pure JAX on any model: it uses ``algorithms``, ``secure``, ``metrics``, but
  imports no data set and no model (the privacy experiment wires them in).
- ``experiments`` may import every library layer, ``cli`` everything: they are the only
  layers that read config files, print or draw. No library layer imports either.

The check is a static scan of every module's source (imports at module level, imports inside
functions, relative imports and ``importlib`` module-path strings), so it needs no heavy
imports; a second test imports the attack library and checks what it actually loaded.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pppml_jax"

ALLOWED: dict[str, frozenset[str]] = {
    "typing": frozenset(),
    "losses": frozenset({"typing"}),
    "metrics": frozenset({"typing"}),
    "models": frozenset({"typing"}),
    "data": frozenset({"typing"}),
    "algorithms": frozenset({"typing", "losses"}),
    "secure": frozenset({"typing", "algorithms"}),
    "federation": frozenset({"typing", "losses", "metrics", "algorithms", "secure"}),
    "attacks": frozenset({"typing", "losses", "metrics", "algorithms", "secure"}),
}
"""For each library layer, the other layers it may import."""

APPLICATIONS = frozenset({"experiments", "cli"})
"""Layers above the library: ``experiments`` may import any library layer, ``cli`` anything."""

_MODULE_PATH = re.compile(r"^pppml_jax\.(\w+)(\.\w+)*(:\w+)?$")


def _is_module_path(value: object) -> bool:
    """Whether a string constant names a module (``"pppml_jax.x.y"`` or ``"pppml_jax.x:f"``)."""
    return isinstance(value, str) and _MODULE_PATH.match(value) is not None


def layer_of(path: Path) -> str | None:
    """The layer of a module file (``None`` for the top-level ``pppml_jax/__init__.py``)."""
    parts = path.relative_to(PACKAGE).parts
    if len(parts) == 1 and parts[0] == "__init__.py":
        return None
    return parts[0].removesuffix(".py")


def module_name(path: Path) -> str:
    """``pppml_jax/attacks/idlg.py`` -> ``pppml_jax.attacks.idlg``."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``pppml_jax`` module a file imports, however it does so."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            if target == "pppml_jax":  # from pppml_jax import data
                found += [(node.lineno, f"pppml_jax.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Constant) and _is_module_path(node.value):
            found.append((node.lineno, node.value.split(":")[0]))  # importlib targets
    return [(line, name) for line, name in found if name.startswith("pppml_jax.")]


def violations() -> list[str]:
    """Every import that breaks :data:`ALLOWED`, as ``file:line: layer -> layer (module)``."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(path)
        if layer is None or layer == "cli":
            continue
        for line, name in imported_modules(path):
            target = name.split(".")[1]
            if target == layer:
                continue
            ok = target != "cli" if layer == "experiments" else target in ALLOWED[layer]
            if not ok:
                rel = path.relative_to(PACKAGE.parent)
                out.append(f"{rel}:{line}: {layer} -> {target} ({name})")
    return out


def test_every_layer_is_classified():
    layers = {layer_of(p) for p in PACKAGE.rglob("*.py")} - {None}
    assert layers == set(ALLOWED) | APPLICATIONS, "classify the new layer in ALLOWED"


def test_the_scan_sees_every_kind_of_import(tmp_path):
    """The scanner finds absolute, lazy, relative, ``from pppml_jax import x`` and importlib."""
    probe = PACKAGE / "attacks" / "idlg.py"
    names = {name for _, name in imported_modules(probe)}
    assert "pppml_jax.attacks.label" in names and "pppml_jax.typing" in names
    registry = PACKAGE / "algorithms" / "registry.py"
    if registry.exists():
        assert any(n.startswith("pppml_jax.algorithms.") for _, n in imported_modules(registry))


def test_no_layer_imports_a_layer_above_it():
    found = violations()
    assert not found, "layering broken:\n" + "\n".join(found)


@pytest.mark.parametrize("layer", ["attacks", "algorithms"])
def test_importing_a_pure_layer_loads_no_data_model_or_application(layer):
    """Importing the layer (all its modules) loads none of data, models, experiments, cli."""
    modules = sorted(
        module_name(p)
        for p in (PACKAGE / layer).rglob("*.py")
        if not (p.name == "views.py" and layer == "attacks")  # views imports secure (allowed)
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = ('data', 'models', 'experiments', 'cli')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
        "[['pppml_jax', b] for b in bad]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
