"""The t2i family: text-to-image diffusion, a Transformer text encoder (own or MiniLM) conditioning the
UNet through cross-attention. Its loaded models are image models that take prompts."""
from ..registry import Family, TrainFlag

FAMILY = Family(
    name="t2i", kind="t2i", title="a text-to-image model",
    datasets=("shapes", "emoji"),
    data_help="or a folder of images with captions.jsonl or captions.tsv",
    run_config="aigc.families.t2i.recipe:T2IRunConfig", recipe="aigc.families.t2i.recipe",
    loader="aigc.families.t2i.model:load_t2i_model", facade="aigc.families.image.model:ImageModel",
    cli="aigc.cli.t2i",
    train_flags=(
        TrainFlag("text_encoder", "text_encoder", str,
                  "own (trained with the UNet; the default) | minilm (frozen all-MiniLM-L6-v2)."),
        TrainFlag("image_size", "image_size", int, "Image size in pixels (default 32)."),
    ),
    trained="trained {params:,} parameters ({text_encoder} text encoder) for {step} steps ({minutes:.1f} min); "
            "best val loss {best:.4f}; run in {run}",
    endpoints=("/v1/images/generations", "/v1/images/edits"),
)
