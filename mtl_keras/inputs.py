"""Checks of the images an episode carries, shared by the model and its per-backend steps."""

from __future__ import annotations

import numpy as np


def check_images(images: np.ndarray, name: str, input_range: tuple[float, float] | None) -> None:
    """Raise a `ValueError` naming ``name`` when ``images`` hold NaN / inf or leave ``input_range``."""
    values = np.asarray(images, dtype=np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        where = np.argwhere(~finite)[0]
        raise ValueError(
            f"{name} hold NaN or inf (first at index {tuple(int(i) for i in where)}): fix the images "
            "(a damaged file, a division by zero in preprocessing); one such pixel would make every weight NaN."
        )
    if input_range is not None and values.size:
        low, high = input_range
        lo, hi = float(values.min()), float(values.max())
        if lo < low - 1e-6 or hi > high + 1e-6:
            hint = " — divide by 255" if hi > 1.5 and high <= 1 else ""
            raise ValueError(
                f"{name} range over [{lo:g}, {hi:g}] but the model takes images in [{low:g}, {high:g}]"
                f"{hint} (or build the model with input_range=None if that range is on purpose)."
            )
