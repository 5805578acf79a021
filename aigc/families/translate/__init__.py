"""The translate family: an encoder-decoder Transformer translator (beam search, sacreBLEU)."""
from ..registry import Family, TrainFlag

FAMILY = Family(
    name="translate", kind="seq2seq", title="a translation model",
    datasets=("bible-en-es",),
    data_help="or a .tsv of source<TAB>target, or two aligned files 'a.en,a.es'",
    run_config="aigc.families.translate.recipe:TranslateRunConfig", recipe="aigc.families.translate.recipe",
    loader="aigc.families.translate.model:load_translator", facade="aigc.families.translate.model:Translator",
    cli="aigc.cli.translate",
    train_flags=(TrainFlag("src", "src", str, "Source language (default en)."),
                 TrainFlag("tgt", "tgt", str, "Target language (default es)."),
                 TrainFlag("max_tokens", "max_tokens", int, "Tokens per optimizer step (padding included).")),
    trained="trained {params:,} parameters for {step} steps ({minutes:.1f} min); best dev BLEU {best}; run in {run}",
    endpoints=("/v1/translations",),
)
