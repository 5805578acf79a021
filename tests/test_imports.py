"""The one-way data flow of the package (see the design notes), held by walking every module's imports.

    data, audio -> tokenizers -> nn -> models -> diffusion, objectives -> checkpoint, train -> generate
      -> tune, eval -> families -> api, cli, serve

A module imports only from its own layer or layers to its left; imports under ``if TYPE_CHECKING:`` are
types only and are not followed. Loading and running a model (the inference path) never reaches
``aigc.train``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import aigc

ROOT = Path(aigc.__file__).parent
LAYERS = {  # top-level part of aigc -> layer; modules every layer may use sit at 0
    "errors": 0, "config": 0, "plotting": 0,
    "data": 1, "audio": 1, "tokenizers": 2, "nn": 3, "models": 4, "diffusion": 5, "objectives": 5,
    "checkpoint": 6, "train": 6, "generate": 7, "tune": 8, "eval": 8, "families": 9,
    "api": 10, "cli": 10, "serve": 10, "__init__": 11, "__main__": 11,
}
# the inference path: loading a checkpoint and generating from it
INFERENCE = ("aigc.api", "aigc.checkpoint", "aigc.generate", "aigc.families.text.model",
             "aigc.families.translate.model", "aigc.families.image.model", "aigc.families.image.experts",
             "aigc.families.t2i.model")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path) -> set[str]:
    """The aigc modules ``path`` imports at run time (anywhere in it, lazy imports included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("aigc"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.startswith("aigc"):
                    if target != "aigc":  # "from aigc import checkpoint" imports the submodule, not the facade
                        found.add(target)
                    found.update(f"{target}.{a.name}" for a in child.names)  # "from pkg import module"
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1] if len(parts) > 1 else "__init__")


def all_modules() -> dict[str, set[str]]:
    known = {module_name(p) for p in ROOT.rglob("*.py")}
    return {module_name(p): {m for m in imports_of(p) if m in known} for p in ROOT.rglob("*.py")}


def test_every_part_of_the_package_has_a_layer():
    unplaced = sorted({m.split(".")[1] for m in all_modules() if "." in m and layer(m) is None})
    assert not unplaced, f"give these parts of aigc a layer in LAYERS: {unplaced}"


def test_imports_point_only_to_the_left():
    wrong = [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
             for m, targets in all_modules().items() for t in sorted(targets)
             if m != "aigc" and layer(t) is not None and layer(m) is not None and layer(t) > layer(m)]
    assert not wrong, "\n".join(wrong)


def test_checkpoints_load_without_the_trainer():
    graph = all_modules()
    for start in INFERENCE:
        for root in [m for m in graph if m == start or m.startswith(start + ".")]:
            seen, todo = {root}, [root]
            while todo:
                for t in graph.get(todo.pop(), ()):
                    if t not in seen:
                        seen.add(t)
                        todo.append(t)
            reached = sorted(m for m in seen if m == "aigc.train" or m.startswith("aigc.train."))
            assert not reached, f"{root} reaches {reached}: the inference path must not import the trainer"


def test_models_never_import_the_command_line_or_the_service():
    for m, targets in all_modules().items():
        if m.startswith(("aigc.models", "aigc.nn", "aigc.diffusion")):
            bad = [t for t in targets if t.startswith(("aigc.cli", "aigc.serve", "aigc.api", "aigc.families"))]
            assert not bad, f"{m} imports {bad}"


def test_the_library_never_imports_a_peer_library():
    peers = ("transformers", "diffusers")
    bad = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            bad += [f"{module_name(path)} imports {n}" for n in names if n.split(".")[0] in peers]
    assert not bad, "\n".join(bad)
