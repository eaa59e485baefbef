"""The shape of the code, checked: imports point down the layers and make no cycles (a module that
reaches up, or two modules that need each other, fail here; every import counts, those inside
functions too), the pipeline's facade stays small and no server function grows long. The layers
are docs/architecture.md's."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "smalto"
# Bottom to top; a module may import its own layer and those below.
LAYERS = [
    {"errors", "atomic", "paths", "options", "precision", "assets", "weights", "plots", "progress"},  # utilities
    {"data"},  # ShapesWorld, folders, the decoding gate, task names
    {"verify"},  # pixels -> scene graphs, specs, the solver, judges
    {"tokenizers"},
    {"format"},
    {"model"},
    {"checkpoint", "adapters"},
    {"inference"},
    {"effort"},  # what each effort level spends (free of torch, for the CLI's flags)
    {"pipeline"},
    {"training"},  # trainers of the model and the tokenizers, fine-tuning, RL
    {"eval"},
    {"export"},
    {"apps", "__main__"},
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in ROOT.rglob("*.py")}


def _imports(module: str) -> set[str]:
    """The smalto modules `module` imports (a name imported from a package counts as the
    submodule when it is one, else as the package)."""
    out = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("smalto"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & MODULES.keys()
            out |= subs | ({node.module} if len(subs) < len(node.names) else set())
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
    return out - {module, "smalto"}  # (the root package holds only __version__ and a lazy load())


GRAPH = {m: _imports(m) for m in MODULES}


def _layer(module: str) -> str:
    return module.split(".")[1]


def test_every_package_and_module_has_a_layer():
    assert {_layer(m) for m in MODULES if m != "smalto"} <= RANK.keys()


def test_imports_point_down_the_layers():
    up = sorted(f"{a} -> {b}" for a, bs in GRAPH.items() if a != "smalto" for b in bs
                if RANK[_layer(b)] > RANK[_layer(a)])
    assert up == []


def test_no_two_modules_need_each_other():
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in GRAPH.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    # (a package's __init__ importing its own modules, which import their siblings, is not a cycle)
    related = lambda a, b: a.startswith(b + ".") or b.startswith(a + ".")  # noqa: E731
    cycles = sorted(f"{a} <-> {b}" for a, bs in GRAPH.items() for b in bs if a in reach(b) and not related(a, b))
    assert cycles == []


def test_the_pipeline_facade_is_small_and_no_server_function_is_long():
    assert len((ROOT / "pipeline" / "__init__.py").read_text().splitlines()) <= 350
    long = []
    for path in (ROOT / "apps" / "serve").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []
