"""The image family: an Improved-DDPM UNet (learned Σ), unconditional or class-conditional."""
from ..registry import Family, TrainFlag

FAMILY = Family(
    name="image", kind="unet", title="an image diffusion model",
    datasets=("fashion-mnist", "digits"),
    data_help="or a folder of images (class sub-folders give labels)",
    run_config="aigc.families.image.recipe:ImageRunConfig", recipe="aigc.families.image.recipe",
    loader="aigc.families.image.model:load_image_model", facade="aigc.families.image.model:ImageModel",
    cli="aigc.cli.image",
    train_flags=(
        TrainFlag("class_cond", "class_cond", bool, "Condition on the classes (+ guidance).",
                  ("--class-cond",), value="true"),
        TrainFlag("learn_sigma", "diffusion.learn_sigma", bool,
                  "Learned-range Σ with the hybrid loss (preset default: on).", ("--learn-sigma/--fixed-sigma",)),
        TrainFlag("schedule", "diffusion.schedule", str, "Noise schedule: cosine | linear."),
        TrainFlag("image_size", "image_size", int, "Resize images to this size (folders default to 32)."),
    ),
    trained="trained {params:,} parameters for {step} steps ({minutes:.1f} min); best val loss {best:.4f}; "
            "run in {run}",
    endpoints=("/v1/images/generations", "/v1/images/edits"),
    folder_loader="aigc.families.image.experts:open_experts",
)
