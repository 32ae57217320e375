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

    @classmethod
    def from_config(cls, config: Any) -> "EditorOptions":
        # A config saved before the editing section existed has none: raw renders need no widths, and
        # local edits then take them from the caller (or from the config completed with today's defaults).
        editing = config.editing if "editing" in config else None
        return cls(thing_classes=tuple(int(c) for c in (config.features.thing_classes or sorted(cs.THING_IDS))),
                   local_margin_px=None if editing is None else editing.local_margin_px,
                   local_feather_px=None if editing is None else editing.local_feather_px,
                   window_context_px=None if editing is None else editing.get("window_context_px"))
