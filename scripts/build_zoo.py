#!/usr/bin/env python
"""Build the model zoo (``zoo/``) from trained runs, so it can be rebuilt at any time.

    python scripts/build_zoo.py add NAME RUN [--zoo zoo] [--card CARD.md] [--description TEXT]
    python scripts/build_zoo.py manifest [--zoo zoo]

``add`` converts what ``aigc.load(RUN)`` loads — the run's best checkpoint (else its latest), or a
checkpoint folder such as ``RUN/averaged`` — into ``ZOO/NAME/``: config.json and the tokenizer copied
byte for byte, and the weights generation uses (the EMA's when the run kept them, never the optimizer
state) as ``model.safetensors`` with every parameter in float16 (buffers keep their dtype). A folder of
noise-level experts (``experts.json``) becomes ``ZOO/NAME/`` with one such sub-folder per expert and an
``experts.json`` naming them by relative path. The folder's ``MODEL_CARD.md`` is kept across rebuilds
(``--card`` replaces it; a new model gets a stub to fill in). The converted model is loaded back and
compared with the original (same outputs to float16 precision) before it replaces the old folder.

``manifest`` (also run by ``add``) writes ``ZOO/MANIFEST.json``: every file of every model with its
sha256 and size, which ``aigc.load("zoo:NAME")`` checks before loading; it refuses a zoo over 64 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aigc
from aigc import checkpoint as ckpt
from aigc.checkpoint import zoo
from aigc.checkpoint.loading import weights_file
from aigc.families import FAMILIES
from aigc.families.image.experts import EXPERTS_FILE, is_experts_folder

MAX_BYTES = 64 * 10**6          # the zoo's budget: 64 MB in all
CARD = "MODEL_CARD.md"
# files of a checkpoint folder that loading reads besides the weights; everything else (trainer state,
# optimizer, metrics, hypotheses written by eval) stays behind
KEEP_FILES = ("config.json", "tokenizer.json")


def _quiet_load(path: Path, **kwargs: Any):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*stores weights as F16.*", category=UserWarning)
        return aigc.load(path, **kwargs)


def convert_checkpoint(src: Path, out: Path) -> dict[str, Any]:
    """Write checkpoint ``src`` as a float16 zoo checkpoint into ``out`` (a new folder)."""
    config = ckpt.read_config(src)
    family = FAMILIES.by_kind(config.get("kind"))
    if family is None:
        raise SystemExit(f"'{src}' holds a '{config.get('kind')}' model that aigc cannot load")
    original = aigc.load(src)                  # fp32, EMA weights when present: what generation uses
    module = original.model
    params = {n for n, _ in module.named_parameters(remove_duplicate=False)}
    source = weights_file(src, ema=True)
    tensors = ckpt.read_tensors(src, source.stem)
    half: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name in params and t.is_floating_point():
            h = t.to(torch.float16)
            if not torch.isfinite(h).all():
                raise SystemExit(f"'{src}': tensor '{name}' overflows float16 (max |x| {t.abs().max():.3g})")
            half[name] = h.contiguous()
        else:
            half[name] = t.contiguous()
    out.mkdir(parents=True)
    for name in KEEP_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    save_file(half, str(out / "model.safetensors"),
              # one key: safetensors writes a metadata map in no fixed order, and a rebuild of the same
              # weights should give the same bytes
              metadata={"aigc_zoo": json.dumps({"dtype": "float16", "source_weights": source.name,
                                                "source_step": config.get("step")}, sort_keys=True)})
    os.chmod(out / "model.safetensors", 0o644)
    converted = _quiet_load(out)
    _compare(module, converted.model, params, src)
    n_params = sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())
    return {"family": family.name, "kind": config["kind"], "step": config.get("step"), "params": n_params,
            "weights": source.name}


def _compare(a: torch.nn.Module, b: torch.nn.Module, params: set[str], src: Path) -> None:
    """The converted model loads as the original's dtype, its parameters equal to the original's rounded
    to float16 and its buffers unchanged."""
    sa, sb = a.state_dict(), b.state_dict()
    for name, t in sa.items():
        u = sb[name]
        if u.dtype != t.dtype:
            raise SystemExit(f"'{src}': '{name}' loads as {u.dtype}, not {t.dtype}")
        ref = t.to(torch.float16).to(t.dtype) if name in params and t.is_floating_point() else t
        if not torch.equal(u, ref):
            raise SystemExit(f"'{src}': '{name}' did not survive the float16 round trip")


def build(name: str, run: Path, zoo_dir: Path, card: Path | None = None, description: str | None = None) -> Path:
    """Convert ``run`` into ``zoo_dir/name`` (replacing it), then rewrite the manifest."""
    if not name or "/" in name or name.startswith(".") or name == zoo.MANIFEST:
        raise SystemExit(f"bad zoo name '{name}'")
    zoo_dir.mkdir(parents=True, exist_ok=True)
    dest = zoo_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=zoo_dir))
    staged = tmp / name
    try:
        if is_experts_folder(run):
            info = _convert_experts(run, staged)
        else:
            info = convert_checkpoint(ckpt.resolve(run), staged)
        info["source"] = os.path.relpath(run.resolve(), ROOT) if run.resolve().is_relative_to(ROOT) else str(run)
        if card is not None:
            shutil.copyfile(card, staged / CARD)
        elif (dest / CARD).is_file():
            shutil.copyfile(dest / CARD, staged / CARD)
        else:
            (staged / CARD).write_text(_stub_card(name, info), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(staged, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest = _existing_manifest(zoo_dir)
    entry = {**manifest["models"].get(name, {}), **info}
    if description is not None:
        entry["description"] = description
    manifest["models"][name] = entry
    write_manifest(zoo_dir, manifest["models"])
    return dest


def _convert_experts(folder: Path, out: Path) -> dict[str, Any]:
    spec = json.loads((folder / EXPERTS_FILE).read_text(encoding="utf-8"))
    out.mkdir(parents=True)
    entries, experts, used = [], [], set()
    for e in spec["experts"]:
        path = Path(e["model"]) if Path(e["model"]).is_absolute() else folder / e["model"]
        sub = Path(e["model"]).name
        while sub in used or sub in (CARD, EXPERTS_FILE):
            sub += "_"
        used.add(sub)
        info = convert_checkpoint(ckpt.resolve(path), out / sub)
        entries.append({"model": sub, "from_t": e["from_t"], **({"guidance": e["guidance"]} if "guidance" in e else {})})
        experts.append({"name": sub, "from_t": e["from_t"], **info})
    (out / EXPERTS_FILE).write_text(json.dumps({"experts": entries}, indent=2) + "\n", encoding="utf-8")
    _quiet_load(out)  # the joined experts load
    return {"family": experts[0]["family"], "kind": "experts", "params": sum(x["params"] for x in experts),
            "experts": experts}


def _stub_card(name: str, info: dict[str, Any]) -> str:
    return (f"# {name}\n\nA {info['family']} model of the aigc zoo ({info['params']:,} parameters, float16 "
            f"weights). Converted from `{info.get('source', '?')}` by `scripts/build_zoo.py`.\n\n"
            "TODO: data, training command, CPU minutes and steps, `aigc eval` figures, intended use, limits.\n")


def _existing_manifest(zoo_dir: Path) -> dict[str, Any]:
    try:
        return zoo.read_manifest(zoo_dir)
    except Exception:  # noqa: BLE001 - none yet, or one to replace
        return {"models": {}}


def write_manifest(zoo_dir: Path, models: dict[str, Any] | None = None) -> dict[str, Any]:
    """Hash every file in ``zoo_dir`` (the model folders, and an index such as README.md) into
    ``MANIFEST.json``; ``models`` (default: the manifest's own) describes the model folders."""
    if models is None:
        models = _existing_manifest(zoo_dir)["models"]
    folders = sorted(p.name for p in zoo_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    models = {n: models.get(n, {}) for n in folders}
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(zoo_dir.rglob("*")):
        rel = path.relative_to(zoo_dir).as_posix()
        if path.is_file() and rel != zoo.MANIFEST and not any(part.startswith(".") for part in rel.split("/")):
            files[rel] = {"sha256": zoo.sha256_file(path), "size": path.stat().st_size}
    total = sum(e["size"] for e in files.values())
    if total > MAX_BYTES:
        raise SystemExit(f"the zoo holds {total / 1e6:.1f} MB, over its {MAX_BYTES / 1e6:.0f} MB budget")
    manifest = {"format": zoo.FORMAT, "version": zoo.VERSION, "total_bytes": total, "models": models,
                "files": files}
    tmp = zoo_dir / f".{zoo.MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, zoo_dir / zoo.MANIFEST)
    return manifest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add", help="convert a run (or checkpoint, or experts folder) into ZOO/NAME")
    a.add_argument("name")
    a.add_argument("run", type=Path)
    a.add_argument("--zoo", type=Path, default=ROOT / "zoo")
    a.add_argument("--card", type=Path, help="MODEL_CARD.md to ship (default: keep the folder's own)")
    a.add_argument("--description", help="one line for the manifest")
    m = sub.add_parser("manifest", help="rewrite ZOO/MANIFEST.json from the folders present")
    m.add_argument("--zoo", type=Path, default=ROOT / "zoo")
    args = ap.parse_args(argv)
    if args.cmd == "add":
        dest = build(args.name, args.run, args.zoo, args.card, args.description)
        size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
        print(f"{dest}: {size / 1e6:.2f} MB")
    else:
        manifest = write_manifest(args.zoo)
        print(f"{args.zoo / zoo.MANIFEST}: {len(manifest['models'])} models, {len(manifest['files'])} files, "
              f"{manifest['total_bytes'] / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
