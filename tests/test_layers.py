"""Imports point one way (DESIGN.md): data -> tokenizers -> nn -> models -> objectives
-> train -> generate -> eval -> pipelines -> recipes -> api -> cli. Nothing imports to its right,
and the library never imports a peer library."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "aigc"
ORDER = ["errors", "config", "data", "tokenizers", "nn", "models", "diffusion", "objectives", "train", "generate",
         "eval", "pipelines", "recipes", "api", "cli", "__init__", "__main__"]
RANK = {name: i for i, name in enumerate(ORDER)}
RANK["config"] = RANK["errors"]


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def _imports(path: Path, module: str):
    tree = ast.parse(path.read_text())
    pkg_parts = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_imports_point_left_only():
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        own = _layer(module) if module != "aigc" else "__init__"
        for target, _ in _imports(path, module):
            if target.split(".")[0] in ("transformers", "diffusers"):
                bad.append(f"{module} imports peer library {target}")
            if not target.startswith("aigc.") or own in ("__init__", "__main__"):
                continue
            other = _layer(target)
            if other != own and RANK[other] > RANK[own]:
                bad.append(f"{module} imports {target} (a layer to its right)")
    assert not bad, "\n".join(bad)
