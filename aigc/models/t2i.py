"""Text-to-image: a Transformer text encoder conditioning the diffusion UNet.

    caption ids (B, S), mask (B, S) -> text encoder -> tokens (B, S, E), pooled (B, E)
    x_t (B, C, H, W), t (B,), tokens, mask, pooled -> UNet (cross-attention + pooled embedding)
      -> (B, out_channels, H, W)

The text encoder is either trained jointly with the UNet from scratch, or a
frozen pre-trained one (all-MiniLM-L6-v2). A frozen encoder is held outside the
module's registered children: it is not in ``parameters()`` or ``state_dict()``
(so neither the optimizer, the EMA, DDP nor the checkpoints carry its 22M
weights; they come from the package at load time), but it follows ``.to()``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .minilm import load_minilm_encoder
from .text_encoder import TextEncoder, TextEncoderConfig
from .unet import UNet, UNetConfig


@dataclass
class TextCondition:
    """An encoded batch of captions: what the UNet attends to."""

    tokens: Tensor   # (B, S, E) token embeddings (rows past a caption's length are padding)
    mask: Tensor     # (B, S) bool, True at real tokens
    pooled: Tensor   # (B, E)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device: torch.device | str) -> TextCondition:
        return TextCondition(self.tokens.to(device), self.mask.to(device), self.pooled.to(device))

    def repeat(self, n: int) -> TextCondition:
        """A one-caption condition repeated for a batch of n."""
        if len(self) != 1:
            raise ValueError(f"only a single caption can be repeated, this holds {len(self)}")
        return TextCondition(self.tokens.expand(n, -1, -1), self.mask.expand(n, -1), self.pooled.expand(n, -1))

    @staticmethod
    def cat(parts: list[TextCondition]) -> TextCondition:
        """Stack conditions along the batch, padding the token axis to the longest."""
        width = max(p.tokens.shape[1] for p in parts)
        tokens = torch.cat([F.pad(p.tokens, (0, 0, 0, width - p.tokens.shape[1])) for p in parts])
        mask = torch.cat([F.pad(p.mask, (0, width - p.mask.shape[1]), value=False) for p in parts])
        return TextCondition(tokens, mask, torch.cat([p.pooled for p in parts]))


class TextToImage(nn.Module):
    """A text-conditional UNet with its text encoder (trainable, or frozen and left out of the weights)."""

    def __init__(self, unet: UNet, text: TextEncoder, frozen_text: bool = False) -> None:
        super().__init__()
        ucfg, tcfg = unet.config, text.config
        if not ucfg.text_conditional:
            raise ConfigError("the UNet needs model.context_dim > 0 (the text encoder's width) to read captions")
        if ucfg.context_dim != tcfg.d_model:
            raise ConfigError(f"model.context_dim ({ucfg.context_dim}) must equal the text encoder's width "
                              f"({tcfg.d_model})")
        if tcfg.pooling == "none":
            raise ConfigError("the text encoder must pool its tokens (pooling mean or cls): the UNet adds the "
                              "pooled caption to its timestep embedding")
        self.unet = unet
        self.frozen_text = frozen_text
        if frozen_text:
            text.eval().requires_grad_(False)
            object.__setattr__(self, "_frozen", text)   # not a registered child: no weights, no gradients
        else:
            self.text = text

    @property
    def config(self):
        return self.unet.config

    @property
    def text_encoder(self) -> TextEncoder:
        return self._frozen if self.frozen_text else self.text

    def _apply(self, fn, recurse: bool = True):  # .to(), .float(), ... reach the frozen encoder too
        super()._apply(fn, recurse)
        if self.frozen_text:
            self._frozen._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> TextToImage:
        super().train(mode)
        if self.frozen_text:
            self._frozen.eval()
        return self

    def num_params(self) -> int:
        """Trainable parameters (a frozen encoder is not counted)."""
        return sum(p.numel() for p in self.parameters())

    def encode(self, ids: Tensor, mask: Tensor) -> TextCondition:
        """Caption ids (B, S) with their mask (B, S) -> the condition the UNet attends to."""
        enc = self.text_encoder
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_text):
            out = enc(ids.to(self.unet.conv_in.weight.device), mask.to(self.unet.conv_in.weight.device))
        return TextCondition(out.tokens, out.mask, out.pooled)

    def forward(self, x: Tensor, t: Tensor, cond: TextCondition | tuple[Tensor, Tensor]) -> Tensor:
        """x (B, C, H, W), t (B,), cond: an encoded ``TextCondition`` or caption ``(ids, mask)``."""
        if not isinstance(cond, TextCondition):
            cond = self.encode(*cond)
        return self.unet(x, t, context=cond.tokens, context_mask=cond.mask, pooled=cond.pooled)


TEXT_ENCODERS = ("own", "minilm")


def build_text_to_image(unet_cfg: UNetConfig, text_cfg: TextEncoderConfig, text_encoder: str) -> TextToImage:
    """The UNet with its text encoder: ``own`` (a fresh ``TextEncoder(text_cfg)``, trained with the UNet)
    or ``minilm`` (the frozen pre-trained all-MiniLM-L6-v2 from its package; ``text_cfg`` is ignored).
    ``unet_cfg.context_dim`` is set to the encoder's width."""
    if text_encoder not in TEXT_ENCODERS:
        raise ConfigError(f"text_encoder must be one of {', '.join(TEXT_ENCODERS)}, got '{text_encoder}'")
    text = load_minilm_encoder() if text_encoder == "minilm" else TextEncoder(text_cfg)
    unet_cfg.context_dim = text.config.d_model
    return TextToImage(UNet(unet_cfg), text, frozen_text=text_encoder == "minilm")
