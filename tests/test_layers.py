"""Imports point down the layers (DESIGN.md), and no two modules import each other."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "lmscale"

# Lower layers first; a module may import only from layers at its level or below.
LAYERS = [
    {"errors", "config", "flops", "storage"},
    {"models", "parallel", "data"},
    {"train"},
    {"convert"},
    {"tasks"},
    {"plan", "scaling"},
    {"cli"},
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def imports() -> dict[str, set[str]]:
    """module ("lmscale.x.y") -> the lmscale modules it imports (anywhere in its body)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lmscale"):
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names if a.name.startswith("lmscale"))
        found[module] = names
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_import_points_down_the_layers():
    upward = [(m, i) for m, names in imports().items() for i in names
              if layer(i) in LEVEL and LEVEL[layer(i)] > LEVEL[layer(m)]]
    assert not upward, upward


def test_no_import_cycles_between_modules():
    found = imports()
    graph = {m: {i for i in names if i in found} for m, names in found.items()}
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                raise AssertionError(" -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])
