"""What the editor reads from a run's config (features.thing_classes, the editing section), read once."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from pix2pixhd_jax.data import cityscapes as cs


@dataclasses.dataclass(frozen=True)
class EditorOptions:
    """The editor's settings from a run's config; values are checked where they are used."""

    thing_classes: tuple[int, ...]  # classes whose regions are objects (features.thing_classes, else Cityscapes')
    local_margin_px: Optional[Any]  # editing.*: None when the config predates the editing section
    local_feather_px: Optional[Any]
    window_context_px: Optional[Any]  # editing.window_context_px: None when the config predates it
    colour_corrections: int = 0  # editing.colour_corrections: 0 when the config predates it
    colour_feature_bound: float = 1.0  # editing.colour_feature_bound: 1 (the trained range) when it predates it

    @classmethod
    def from_config(cls, config: Any) -> "EditorOptions":
        # A config saved before the editing section existed has none: raw renders need no widths, and
        # local edits then take them from the caller (or from the config completed with today's defaults).
        editing = config.editing if "editing" in config else None
        return cls(thing_classes=tuple(int(c) for c in (config.features.thing_classes or sorted(cs.THING_IDS))),
                   local_margin_px=None if editing is None else editing.local_margin_px,
                   local_feather_px=None if editing is None else editing.local_feather_px,
                   window_context_px=None if editing is None else editing.get("window_context_px"),
                   colour_corrections=count(None if editing is None else editing.get("colour_corrections"), 0,
                                             "editing.colour_corrections"),
                   colour_feature_bound=_bound(None if editing is None else editing.get("colour_feature_bound"), 1.0,
                                               "editing.colour_feature_bound"))


def count(value: Any, absent: int, name: str) -> int:
    """A whole number >= 0 (`absent` for None)."""
    if value is None:
        return absent
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)


def _bound(value: Any, absent: float, name: str) -> float:
    """A number >= 1 (`absent` for None)."""
    if value is None:
        return absent
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1.0:
        raise ValueError(f"{name} must be a number >= 1 (feature units; 1 = the trained range), got {value!r}")
    return float(value)
