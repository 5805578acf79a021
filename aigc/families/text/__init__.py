"""The text family: a decoder-only GPT language model (articles, poetry, code, music notation)."""
from ..registry import Family, TrainFlag

FAMILY = Family(
    name="text", kind="gpt", title="a language model",
    datasets=("fortunes", "bible-en", "fortunes-zh", "python-code"),
    data_help="or your own .txt file or folder of .txt files",
    run_config="aigc.families.text.recipe:TextRunConfig", recipe="aigc.families.text.recipe",
    loader="aigc.families.text.model:load_text_model", facade="aigc.families.text.model:TextModel",
    cli="aigc.cli.text",
    train_flags=(TrainFlag("tokenizer", "tokenizer.kind", str, "char | bpe"),
                 TrainFlag("vocab_size", "tokenizer.vocab_size", int, "BPE vocabulary size.")),
    trained="trained {params:,} parameters for {step} steps ({minutes:.1f} min); best val loss {best:.4f}; "
            "run in {run}",
    endpoints=("/v1/completions", "/v1/chat/completions"),
)
