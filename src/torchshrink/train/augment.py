"""Cheap on-tensor data augmentation for the training loop (``TrainConfig.augment``).

Augmentation runs on whole batches of already-normalised tensors, so it needs no image library
and costs little next to the forward pass.

Example:
    >>> import torch
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> augment_batch(x, "shift2").shape
    torch.Size([1, 1, 4, 4])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchshrink.core.errors import ConfigError, ShapeError


def random_shift(x: torch.Tensor, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by its own random offset in ``[-max_shift, max_shift]`` along H and W.

    The border is filled by repeating edge pixels, which for digit-like images is the
    background value (whatever the normalisation). Offsets come from the global torch RNG, so a
    seeded training run stays reproducible.

    Args:
        x: images ``(B, C, H, W)``.
        max_shift: largest shift in pixels.

    Raises:
        ShapeError: ``x`` is not 4-D.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> random_shift(torch.ones(3, 1, 5, 5)).sum().item()
        75.0
    """
    if x.dim() != 4:
        raise ShapeError(
            f"augment 'shift2': needs image batches (B, C, H, W), got shape {tuple(x.shape)}"
        )
    b, c, h, w = x.shape
    side = w + 2 * max_shift
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")  # (B, C, H + 2s, W + 2s)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), device=x.device)  # (B,)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), device=x.device)  # (B,)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (B, W)
    # One flat gather picks each sample's crop window; it is several times faster than
    # advanced indexing over (B, H, W) on CPU.
    idx = (rows[:, :, None] * side + cols[:, None, :]).reshape(b, 1, h * w)  # (B, 1, H*W)
    out = padded.reshape(b, c, -1).gather(2, idx.expand(b, c, h * w))  # (B, C, H*W)
    return out.reshape(b, c, h, w)


def augment_batch(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Apply the augmentation named by ``TrainConfig.augment`` to a training batch.

    Raises:
        ConfigError: ``kind`` is not a known augmentation.

    Example:
        >>> augment_batch(torch.zeros(2, 3, 8, 8), "shift2").shape
        torch.Size([2, 3, 8, 8])
    """
    if kind == "shift2":
        return random_shift(x, 2)
    raise ConfigError(f"augment: unknown augmentation '{kind}'; valid names: shift2")
