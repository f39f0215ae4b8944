"""A progress bar per epoch: images done, img/s and ETA from tqdm, loss and lr as a postfix.

The bar is shown on rank 0 only and only on a terminal (tqdm's ``disable=None``), so batch logs and Snakemake
log files get the per-epoch summary lines instead of carriage-return noise.
"""
from __future__ import annotations

from tqdm import tqdm


def epoch_bar(epoch: int, epochs: int, images: int, enabled: bool = True) -> tqdm:
    """A bar over the ``images`` of one epoch; advance it with ``bar.update(batch_images)``."""
    return tqdm(total=images, desc=f"epoch {epoch}/{epochs}", unit="img", unit_scale=True, dynamic_ncols=True,
                leave=False, disable=None if enabled else True)
