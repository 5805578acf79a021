"""The speech recogniser: a Transformer encoder over log-mel frames, a CTC head and an attention decoder
(the hybrid CTC/attention model of Watanabe et al. 2017, in ESPnet's layout).

    feats (B, n_mels, T), lengths (B,)
      -> utterance mean/variance normalisation over the real frames (optional)
      -> Conv2d(1, K, 3, stride 2) + ReLU -> Conv2d(K, K, 3, stride 2) + ReLU    (B, K, T', F')
      -> Linear(K * F', C) + sinusoid + dropout                                  (B, T', C)
      -> N x EncoderLayer (padding masked) -> LayerNorm   = memory                (B, T', C)
    memory -> ctc head Linear(C, V)                                              (B, T', V)
    tgt (B, U) -> the seq2seq decoder stack (causal self-attn + cross-attn to memory) -> logits (B, U, V)

Subsampling: each 3x3 stride-2 convolution without padding maps n frames to (n - 1) // 2, so
T' = ((T - 1) // 2 - 1) // 2 (:func:`subsampled_lengths`), exactly; a real output frame only ever sees
real input frames, so padding never changes the real outputs of a batch.

Vocabulary: one table for both heads. Id ``blank_id`` (default 0) is reserved for the CTC blank: the
tokenizer of the family must give it to a token that never occurs in a transcript (its pad token); the
decoder never has to predict it. The decoder's start/end ids (``bos_id``/``eos_id``) come from the
tokenizer and are passed to decoding (:mod:`aigc.generate.asr`).

The decoder is the decoder half of :class:`aigc.models.seq2seq.Seq2Seq` — the same ``DecoderLayer``, the
same ``decode`` (teacher forcing, or incremental with a :class:`~aigc.nn.attention.KVCache`) and the same
``step`` / :class:`~aigc.models.seq2seq.DecodeState` (beam search's cache), borrowed, not copied.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import check_sizes
from ..errors import ConfigError
from ..nn.activations import ACTIVATIONS
from ..nn.blocks import EncoderLayer
from ..nn.embeddings import sinusoidal_table
from .seq2seq import CacheWorkspace, DecoderLayer, DecodeState, Seq2Seq, Seq2SeqConfig

FEATURE_NORMS = ("utterance", "none")


@dataclass
class ASRConfig:
    vocab_size: int = 0             # including the CTC blank; set from the tokenizer when 0
    blank_id: int = 0               # the CTC blank (reserved: never a transcript token)
    n_mels: int = 80                # feature channels (aigc.audio.FeatureConfig.n_mels)
    conv_channels: int = 256        # K: channels of the two subsampling convolutions
    d_model: int = 256
    n_head: int = 4
    n_encoder_layers: int = 12
    n_decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1            # on the inputs of both stacks and every sublayer's output
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: str = "relu"        # relu | gelu | gelu_tanh
    norm: str = "pre"               # pre | post
    tie_embeddings: bool = True     # the decoder's output projection shares its input embedding
    max_target_len: int = 256       # decoder positions (tokens, the start token included)
    max_frames: int = 3000          # longest input in feature frames (30 s at a 10 ms hop)
    feature_norm: str = "utterance"  # utterance: per-utterance mean/variance over real frames | none

    def validate(self) -> None:
        check_sizes("model", self, {"vocab_size": "vocab", "n_mels": "width", "conv_channels": "width",
                                    "d_model": "width", "n_head": "heads", "n_encoder_layers": "layers",
                                    "n_decoder_layers": "layers", "d_ff": "width",
                                    "max_target_len": "context", "max_frames": "context"})
        if self.d_model % self.n_head:
            raise ConfigError(f"model.d_model ({self.d_model}) must be divisible by model.n_head ({self.n_head})")
        if not 0 <= self.blank_id < self.vocab_size:
            raise ConfigError(f"model.blank_id {self.blank_id} is outside the vocabulary of {self.vocab_size}")
        if self.n_mels < 7 or self.max_frames < 7:
            raise ConfigError("model.n_mels and model.max_frames must be at least 7 (two stride-2 3x3 "
                              f"convolutions need 7 rows), got {self.n_mels} and {self.max_frames}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation must be one of {', '.join(ACTIVATIONS)}, got '{self.activation}'")
        if self.norm not in ("pre", "post"):
            raise ConfigError(f"model.norm must be 'pre' or 'post', got '{self.norm}'")
        if self.feature_norm not in FEATURE_NORMS:
            raise ConfigError(f"model.feature_norm must be one of {', '.join(FEATURE_NORMS)}, "
                              f"got '{self.feature_norm}'")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")

    def decoder_config(self) -> Seq2SeqConfig:
        """The seq2seq config of the decoder half (its encoder fields are unused)."""
        return Seq2SeqConfig(vocab_size=self.vocab_size, pad_id=self.blank_id, max_len=self.max_target_len,
                             n_encoder_layers=self.n_encoder_layers, n_decoder_layers=self.n_decoder_layers,
                             d_model=self.d_model, n_head=self.n_head, d_ff=self.d_ff, dropout=self.dropout,
                             attention_dropout=self.attention_dropout,
                             activation_dropout=self.activation_dropout, activation=self.activation,
                             norm=self.norm, tie_embeddings=self.tie_embeddings)


def subsampled_lengths(lengths: Tensor | int) -> Tensor | int:
    """Frames after the two stride-2 3x3 convolutions (no padding): n -> (n - 1) // 2, twice."""
    if isinstance(lengths, int):
        return max(0, ((lengths - 1) // 2 - 1) // 2)
    return (((lengths - 1) // 2 - 1) // 2).clamp(min=0)


def check_features(feats: Tensor, lengths: Tensor | None, n_mels: int, max_frames: int | None = None) -> Tensor:
    """Refuse what the recogniser cannot read, with a message that says what to pass; returns the lengths
    (B,) long (all T when ``lengths`` is None)."""
    if not isinstance(feats, Tensor) or feats.dim() != 3 or not feats.is_floating_point():
        shape = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
        raise ConfigError(f"speech features must be a float tensor (batch, n_mels={n_mels}, frames), got {shape}")
    B, M, T = feats.shape
    if M != n_mels:
        raise ConfigError(f"speech features have {M} mel channels, the model reads {n_mels}: compute them with "
                          f"aigc.audio.FeatureConfig(n_mels={n_mels}) (shape (batch, n_mels, frames))")
    if B == 0 or T == 0:
        raise ConfigError(f"speech features are empty (shape {tuple(feats.shape)}): there is no audio to read")
    if max_frames is not None and T > max_frames:
        raise ConfigError(f"speech features have {T} frames, more than model.max_frames={max_frames}: "
                          "transcribe long audio in chunks (aigc.generate.asr.transcribe)")
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.long, device=feats.device)
    lengths = torch.as_tensor(lengths, device=feats.device)
    if lengths.shape != (B,) or lengths.is_floating_point():
        raise ConfigError(f"frame lengths must be {B} whole numbers (one per utterance), got shape "
                          f"{tuple(lengths.shape)} of {lengths.dtype}")
    if bool((lengths > T).any()):
        raise ConfigError(f"frame lengths {lengths.tolist()} exceed the {T} frames of the features")
    short = int(lengths.min())
    if short < 7:
        raise ConfigError(f"an utterance of {short} frames is too short: the recogniser needs at least 7 "
                          "feature frames (about 70 ms)")
    return lengths.long()


class ConvSubsampling(nn.Module):
    """(B, T, n_mels) -> (B, (((T-1)//2-1)//2), C): two 3x3 stride-2 convolutions + ReLU, then a linear map."""

    def __init__(self, n_mels: int, channels: int, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, channels, 3, 2), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, 2), nn.ReLU())
        self.out = nn.Linear(channels * subsampled_lengths(n_mels), d_model)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x.unsqueeze(1))                                     # (B, K, T', F')
        B, K, T, F_ = h.shape
        return self.out(h.transpose(1, 2).reshape(B, T, K * F_))          # (B, T', C)


class ASRDecoder(nn.Module):
    """The decoder half of :class:`Seq2Seq`: target embedding + sinusoid, ``DecoderLayer`` stack with
    cross-attention to a given memory, final norm and output projection. Its methods are Seq2Seq's."""

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.tgt_embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.register_buffer("positions", sinusoidal_table(cfg.max_len, cfg.d_model), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_decoder_layers))
        self.dec_norm = nn.LayerNorm(cfg.d_model) if cfg.norm == "pre" else nn.Identity()
        self.out = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    # borrowed from Seq2Seq: they use only the attributes above
    _embed = Seq2Seq._embed
    memory_kv = Seq2Seq.memory_kv            # memory (B, S, C) -> per layer (k, v) (B, H, S, D)
    new_cache = Seq2Seq.new_cache            # KVCache for incremental ``decode``
    decode = Seq2Seq.decode                  # tgt (B, U), memory_kv, mask (B, 1, 1, S) [, cache] -> (B, U, V)
    step = Seq2Seq.step                      # tokens (N,), DecodeState -> logits (N, V)

    @torch.no_grad()
    def start_decoding(self, memory: Tensor, memory_mask: Tensor, group: int, max_len: int,
                       widen_to: int | None = None) -> DecodeState:
        """A beam-search state over encoded speech: memory (B, S, C), memory_mask (B, 1, 1, S) bool."""
        kv = [(k.contiguous(), v.contiguous()) for k, v in self.memory_kv(memory)]
        return DecodeState(self.config, kv, memory_mask, group, max_len, widen_to, CacheWorkspace.of(self))


class BoundDecoder:
    """The decoder bound to one batch of encoded speech, with the interface of a :class:`Seq2Seq` that
    :func:`aigc.generate.seq2seq.beam_search` drives (``config``, ``start_decoding``, ``step``, ``decode``):
    pass ``memory`` as its ``src`` and the memory lengths as ``src_lengths``."""

    def __init__(self, decoder: ASRDecoder, memory: Tensor, memory_lengths: Tensor) -> None:
        self.decoder, self.memory = decoder, memory
        self.mask = length_mask(memory_lengths, memory.size(1))[:, None, None, :]  # (B, 1, 1, S)
        self.config = decoder.config

    def start_decoding(self, src: Tensor, group: int, max_len: int, widen_to: int | None = None) -> DecodeState:
        if src is not self.memory:
            raise ValueError("this decoder is bound to another memory")
        return self.decoder.start_decoding(self.memory, self.mask, group, max_len, widen_to)

    def step(self, tokens: Tensor, state: DecodeState) -> Tensor:
        return self.decoder.step(tokens, state)

    def decode(self, tgt: Tensor, memory_kv, src_mask, cache=None) -> Tensor:
        return self.decoder.decode(tgt, memory_kv, src_mask, cache)


def length_mask(lengths: Tensor, size: int) -> Tensor:
    """(B,) lengths -> (B, size) bool, True on real positions."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


class ASRModel(nn.Module):
    def __init__(self, cfg: ASRConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        C, pre = cfg.d_model, cfg.norm == "pre"
        self.frontend = ConvSubsampling(cfg.n_mels, cfg.conv_channels, C)
        self.register_buffer("positions", sinusoidal_table(subsampled_lengths(cfg.max_frames), C),
                             persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(
            EncoderLayer(C, cfg.n_head, cfg.d_ff, activation=cfg.activation, dropout=cfg.dropout,
                         attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
                         pre=pre) for _ in range(cfg.n_encoder_layers))
        self.enc_norm = nn.LayerNorm(C) if pre else nn.Identity()
        self.ctc_head = nn.Linear(C, cfg.vocab_size)
        self.decoder = ASRDecoder(cfg.decoder_config())
        self._init_weights()
        if cfg.tie_embeddings:
            self.decoder.out.weight = self.decoder.tgt_embed.weight

    def _init_weights(self) -> None:
        """Transformer matrices and embeddings N(0, 0.02) (as Seq2Seq's default), biases 0; the convolutional
        front end keeps PyTorch's (Kaiming-uniform) initialisation, suited to its ReLUs."""
        for name, p in self.named_parameters():
            if name.startswith("frontend.conv"):
                continue
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def param_counts(self) -> dict[str, int]:
        """Parameters per part (shared tensors counted once, in the first part that holds them) and total."""
        seen: set[int] = set()
        counts: dict[str, int] = {}
        for part in ("frontend", "encoder", "enc_norm", "ctc_head", "decoder"):
            n = 0
            for p in getattr(self, part).parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    n += p.numel()
            counts[part] = n
        counts["total"] = sum(counts.values())
        return counts

    # ---- encoder ---------------------------------------------------------------------------------
    def _normalize(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """Per utterance and mel channel: zero mean, unit variance over the real frames; padding -> 0."""
        valid = length_mask(lengths, feats.size(2))[:, None, :].to(feats.dtype)   # (B, 1, T)
        n = lengths.to(feats.dtype)[:, None, None]
        mean = (feats * valid).sum(2, keepdim=True) / n                             # (B, M, 1)
        var = ((feats - mean).square() * valid).sum(2, keepdim=True) / n
        return (feats - mean) * torch.rsqrt(var + 1e-5) * valid

    def encode(self, feats: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """feats (B, n_mels, T), lengths (B,) real frames (None: all T) -> memory (B, T', C) and its
        lengths (B,) with T' = subsampled_lengths(T)."""
        cfg = self.config
        lengths = check_features(feats, lengths, cfg.n_mels, cfg.max_frames)
        if cfg.feature_norm == "utterance":
            feats = self._normalize(feats, lengths)
        x = self.frontend(feats.transpose(1, 2))                                  # (B, T', C)
        x = self.drop(x + self.positions[:x.size(1)])
        mem_lengths = subsampled_lengths(lengths)                                 # (B,)
        mask = length_mask(mem_lengths, x.size(1))[:, None, None, :]              # (B, 1, 1, T')
        for layer in self.encoder:
            x = layer(x, mask)
        return self.enc_norm(x), mem_lengths

    def ctc_logits(self, memory: Tensor) -> Tensor:
        """memory (B, T', C) -> CTC logits (B, T', V) (log_softmax them for the loss / decoding)."""
        return self.ctc_head(memory)

    # ---- decoder ---------------------------------------------------------------------------------
    def decode(self, tgt: Tensor, memory: Tensor, memory_lengths: Tensor, cache=None) -> Tensor:
        """Teacher forcing: tgt (B, U) (start token first) -> logits (B, U, V); with ``cache``
        (``self.decoder.new_cache(B)``) tgt continues the cached prefix (incremental decoding)."""
        mask = length_mask(memory_lengths, memory.size(1))[:, None, None, :]
        return self.decoder.decode(tgt, self.decoder.memory_kv(memory), mask, cache)

    def bind(self, memory: Tensor, memory_lengths: Tensor) -> BoundDecoder:
        """The decoder over this memory, for :func:`aigc.generate.seq2seq.beam_search`."""
        return BoundDecoder(self.decoder, memory, memory_lengths)

    def forward(self, feats: Tensor, lengths: Tensor | None, tgt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """feats (B, n_mels, T), lengths (B,), tgt (B, U) -> attention logits (B, U, V),
        CTC logits (B, T', V) and memory lengths (B,)."""
        memory, mem_lengths = self.encode(feats, lengths)
        return self.decode(tgt, memory, mem_lengths), self.ctc_logits(memory), mem_lengths

