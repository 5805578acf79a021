"""The asr family: a speech recogniser (log-mel -> conv subsampling -> Transformer encoder/decoder, joint
CTC/attention), with WER/CER."""
from ..registry import Family, TrainFlag

FAMILY = Family(
    name="asr", kind="asr", title="a speech recogniser",
    datasets=("speech", "spoken-digits"),
    data_help="or a folder of audio files with transcripts.tsv (or LibriSpeech's */*/ID.trans.txt layout)",
    run_config="aigc.families.asr.recipe:ASRRunConfig", recipe="aigc.families.asr.recipe",
    loader="aigc.families.asr.model:load_recognizer", facade="aigc.families.asr.model:SpeechRecognizer",
    cli="aigc.cli.asr",
    train_flags=(TrainFlag("n_train", "n_train", int, "Training utterances (synthesised ones for speech and "
                                                       "spoken-digits; at most this many of a folder's; 0: all)."),
                 TrainFlag("ctc_weight", "ctc_weight", float, "λ: weight of the CTC loss (0..1)."),
                 TrainFlag("batch_frames", "batch_frames", int, "Feature frames per optimizer step "
                                                                 "(padding included).")),
    trained="trained {params:,} parameters for {step} steps ({minutes:.1f} min); best {best}; run in {run}",
    endpoints=("/v1/audio/transcriptions",),
)
