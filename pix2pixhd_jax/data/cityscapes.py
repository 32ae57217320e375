"""Cityscapes label facts: ids, names, colours, and which classes have instances (format constants)."""
from __future__ import annotations

import numpy as np

# (id, name, has_instances, colour) from cityscapesScripts' labels.py; ids 0..33 are what
# *_gtFine_labelIds.png stores (license plate, id -1, never appears in those files).
LABELS: tuple[tuple[int, str, bool, tuple[int, int, int]], ...] = (
    (0, "unlabeled", False, (0, 0, 0)),
    (1, "ego vehicle", False, (0, 0, 0)),
    (2, "rectification border", False, (0, 0, 0)),
    (3, "out of roi", False, (0, 0, 0)),
    (4, "static", False, (0, 0, 0)),
    (5, "dynamic", False, (111, 74, 0)),
    (6, "ground", False, (81, 0, 81)),
    (7, "road", False, (128, 64, 128)),
    (8, "sidewalk", False, (244, 35, 232)),
    (9, "parking", False, (250, 170, 160)),
    (10, "rail track", False, (230, 150, 140)),
    (11, "building", False, (70, 70, 70)),
    (12, "wall", False, (102, 102, 156)),
    (13, "fence", False, (190, 153, 153)),
    (14, "guard rail", False, (180, 165, 180)),
    (15, "bridge", False, (150, 100, 100)),
    (16, "tunnel", False, (150, 120, 90)),
    (17, "pole", False, (153, 153, 153)),
    (18, "polegroup", False, (153, 153, 153)),
    (19, "traffic light", False, (250, 170, 30)),
    (20, "traffic sign", False, (220, 220, 0)),
    (21, "vegetation", False, (107, 142, 35)),
    (22, "terrain", False, (152, 251, 152)),
    (23, "sky", False, (70, 130, 180)),
    (24, "person", True, (220, 20, 60)),
    (25, "rider", True, (255, 0, 0)),
    (26, "car", True, (0, 0, 142)),
    (27, "truck", True, (0, 0, 70)),
    (28, "bus", True, (0, 60, 100)),
    (29, "caravan", True, (0, 0, 90)),
    (30, "trailer", True, (0, 0, 110)),
    (31, "train", True, (0, 80, 100)),
    (32, "motorcycle", True, (0, 0, 230)),
    (33, "bicycle", True, (119, 11, 32)),
)

# pix2pixHD's Cityscapes models use label_nc=35 (ids 0..33 plus one spare), a format fact.
NUM_LABEL_IDS = 35
NAME_TO_ID: dict[str, int] = {name: i for i, name, _, _ in LABELS}
ID_TO_NAME: dict[int, str] = {i: name for i, name, _, _ in LABELS}
THING_IDS: frozenset[int] = frozenset(i for i, _, thing, _ in LABELS if thing)
# Instance ids below this are a stuff class id; at or above, class*1000 + k (Cityscapes convention).
INSTANCE_ID_OFFSET = 1000


def colour_table() -> np.ndarray:
    """Return a (256, 3) uint8 table mapping label id -> Cityscapes colour (unknown ids black)."""
    table = np.zeros((256, 3), np.uint8)
    for i, _, _, colour in LABELS:
        table[i] = colour
    return table


def colorize_labels(label: np.ndarray) -> np.ndarray:
    """Map an (H, W) label-id map to an (H, W, 3) uint8 Cityscapes colour image."""
    return colour_table()[np.asarray(label).astype(np.int64) & 255]


def instance_class(inst: np.ndarray) -> np.ndarray:
    """Return the label id of each instance id (id if < 1000 else id // 1000)."""
    inst = np.asarray(inst)
    return np.where(inst < INSTANCE_ID_OFFSET, inst, inst // INSTANCE_ID_OFFSET)
