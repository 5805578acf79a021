"""aigc: generative AI from first principles — Transformers and diffusion models you train and run yourself."""
from .api import DecodeConfig, GenerationConfig, ImageModel, SamplingConfig, TextModel, Translator, load
from .errors import AigcError, CheckpointError, ConfigError, DataError

__version__ = "0.1.0"
__all__ = ["load", "TextModel", "Translator", "ImageModel", "GenerationConfig", "SamplingConfig", "DecodeConfig",
           "AigcError", "ConfigError", "DataError", "CheckpointError"]
