"""Commands for text-to-image: eval t2i (generation is ``aigc generate image --prompt``; ``aigc train t2i``
comes from the registry)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..diffusion.sampling import SamplingConfig
from .common import JSON_HELP, emit_json, eval_app
from .options import SAMPLING, with_options


def _scales(text: str) -> list[float]:
    from ..errors import ConfigError

    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--guidance takes numbers separated by commas, e.g. 1,2,4,7; got '{text}'") from None
    if not scales or any(s <= 0 for s in scales):
        raise ConfigError(f"guidance scales must be positive, got '{text}'")
    return scales


@eval_app.command("t2i")
@with_options(SAMPLING.without("guidance"))
def eval_t2i_cmd(
    model: Path = typer.Option(..., help="Run folder or checkpoint folder of a text-to-image model."),
    n: int = typer.Option(200, help="shapes: prompts per split (seen and held-out colour-shape combinations). "
                                    "emoji or a folder: images generated for FID/KID (from the captions of a "
                                    "fixed subset of the real reference images), and at most this many held-out "
                                    "prompts for retrieval."),
    guidance: str = typer.Option("4", help="Guidance scale(s), comma-separated, e.g. 1,2,4,7."),
    start: int = typer.Option(0, help="shapes: first test scene of each split (tune settings on one range "
                              "of scenes, report another)."),
    batch_size: int = typer.Option(50, help="Images sampled per batch."),
    plot: Optional[Path] = typer.Option(None, help="Write the scores against guidance as a PNG plot here."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    sampling: SamplingConfig = None,
) -> None:
    """Measure a text-to-image model at each guidance scale. shapes: prompt adherence (per-attribute and
    overall accuracy read back by the programmatic checker) on seen and held-out colour-shape combinations.
    emoji or a captioned folder: FID/KID of generated images against the real ones (emoji: all 1,899;
    a folder: its test split) and top-1/top-5 retrieval accuracy of images generated from held-out captions
    under a small contrastive model trained on the train split, beside the real images' ceiling and chance."""
    from ..api import ImageModel, load_kind
    from ..errors import ConfigError

    if batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    scales = _scales(guidance)
    im = load_kind(model, ImageModel)
    if not im.text_conditional:
        raise ConfigError(f"'{model}' is not a text-to-image model (train one with `aigc train t2i`)")
    data = im.config.get("data")
    if data == "shapes":
        from ..eval.t2i_shapes import evaluate_shapes_adherence, plot_adherence

        result = evaluate_shapes_adherence(im, sampling, n=n, guidance=scales, batch_size=batch_size, start=start,
                                           progress=progress)
        plotter, table = plot_adherence, _adherence_table
    else:
        from ..eval.t2i_captioned import evaluate_captioned, plot_captioned

        result = evaluate_captioned(im, sampling, n=n, guidance=scales, batch_size=batch_size, progress=progress)
        plotter, table = plot_captioned, _captioned_table
    result["model"] = str(im.path)
    if plot is not None:
        plotter(result, plot)
        result["plot"] = str(plot)
    if as_json:
        emit_json(result)
        return
    print(table(result))


def _captioned_table(result: dict) -> str:
    keys = ("image_to_text@1", "image_to_text@5", "text_to_image@1", "text_to_image@5")
    heads = ("i->t@1", "i->t@5", "t->i@1", "t->i@5")
    lines = [f"{'guidance':>8} {'FID':>8} {'KID':>8} " + " ".join(f"{h:>7}" for h in heads)]

    def row(label: str, fid: str, kid: str, score: dict) -> str:
        return f"{label:>8} {fid:>8} {kid:>8} " + " ".join(f"{100 * score[k]:>7.1f}" for k in keys)

    for score in result["scores"]:
        lines.append(row(f"{score['guidance']:g}", f"{score['fid']:.2f}", f"{score['kid']:.4f}", score))
    lines.append(row("real", "-", "-", result["real"]))
    lines.append(row("chance", "-", "-", result["chance"]))
    train = result["contrastive_train_images"]
    ref = "train + test" if result["fid_reference"] == "all" else f"{result['fid_reference']} split"
    lines.append(f"(FID/KID at {result['image_size']}x{result['image_size']}: {result['n']:,} generated images vs "
                 f"{result['n_ref']:,} real ({result['data']}, {ref}); retrieval: {result['retrieval_prompts']:,} "
                 "held-out prompts, contrastive model trained on the train split"
                 + (f" ({train:,} images)" if train else "") + f"; {result['sampler']} {result['steps']} steps; "
                 "accuracy in %)")
    return "\n".join(lines)


def _adherence_table(result: dict) -> str:
    keys = ("overall", "colour", "shape", "size", "relation", "count")
    lines = [f"{'split':<8} {'guidance':>8} " + " ".join(f"{k:>8}" for k in keys) + "   overall, 1 / 2 / 3 objects"]

    def row(split: str, scale: str, score: dict) -> str:
        cells = " ".join(f"{'-' if score[k] is None else f'{100 * score[k]:.1f}':>8}" for k in keys)
        by_objects = " / ".join(f"{100 * v:.0f}" for v in score.get("overall_by_objects", {}).values())
        return f"{split:<8} {scale:>8} {cells}" + (f"   {by_objects}" if by_objects else "")

    for split, score in result["real"].items():
        lines.append(row(split, "real", score))
    for score in result["scores"]:
        lines.append(row(score["split"], f"{score['guidance']:g}", score))
    lines.append(f"({result['n']} prompts per split, {result['sampler']} {result['steps']} steps; accuracy in %)")
    return "\n".join(lines)
