"""What the editor sends and receives: PNGs as base64, uploaded id maps, and the instance table."""
from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from pix2pixhd_jax.data import cityscapes as cs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ID_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L")  # single-channel PNGs that hold ids
# zlib level 1: ids and photos compress nearly as well as at level 6 in a fraction of the time,
# and every edit response carries up to three PNGs.
PNG_COMPRESS_LEVEL = 1


class UploadError(ValueError):
    """An uploaded file the editor cannot use; the message says why."""


def png_base64(array: np.ndarray) -> str:
    """(H, W, 3) uint8, (H, W) uint8 or (H, W) uint16 -> base64 PNG (uint16 stays 16-bit)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def image_png(image: np.ndarray) -> str:
    """(H, W, 3) uint8 -> base64 PNG with unfiltered rows in stored (level 0) deflate blocks.

    Every edit sends the new image: this costs a memory copy and a CRC, where PIL's filtered,
    compressed PNG costs ~10 ms at 512x256 on a laptop core (a tenth of a generator pass); the
    file is larger (the raw pixels) but stays a standard PNG.
    """
    image = np.ascontiguousarray(image, np.uint8)
    h, w, c = image.shape
    if c != 3:
        raise ValueError(f"expected an RGB image, got {c} channels")
    rows = np.empty((h, 1 + w * 3), np.uint8)
    rows[:, 0] = 0  # filter type None
    rows[:, 1:] = image.reshape(h, w * 3)
    return base64.b64encode(b"".join([
        PNG_SIGNATURE,
        _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)),  # 8-bit RGB, no interlace
        _chunk(b"IDAT", zlib.compress(rows.tobytes(), 0)),
        _chunk(b"IEND", b""),
    ])).decode("ascii")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def grey_png(ids: np.ndarray) -> str:
    """(H, W) uint8 or uint16 ids -> base64 grey PNG, every row filtered 'Up', deflated for runs.

    Id maps are flat regions: the difference to the row above is mostly zero, which zlib's run-length
    strategy packs in a few ms (PIL at level 1: 3-6x the time and a larger file at 1024x512).
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected (H, W) uint8 or uint16 ids, got {ids.shape} {ids.dtype}")
    h, w = ids.shape
    raw = np.ascontiguousarray(ids.astype(">u2") if ids.dtype == np.uint16 else ids).view(np.uint8).reshape(h, -1)
    rows = np.empty((h, 1 + raw.shape[1]), np.uint8)
    rows[:, 0] = 2  # filter type Up (the first row's "above" is zeros: its bytes as they are)
    rows[0, 1:] = raw[0]
    np.subtract(raw[1:], raw[:-1], out=rows[1:, 1:])  # modulo 256, as the filter is defined
    deflate = zlib.compressobj(PNG_COMPRESS_LEVEL, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    return base64.b64encode(b"".join([
        PNG_SIGNATURE,
        _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8 * ids.itemsize, 0, 0, 0, 0)),  # grey, no interlace
        _chunk(b"IDAT", deflate.compress(rows.tobytes()) + deflate.flush()),
        _chunk(b"IEND", b""),
    ])).decode("ascii")


def label_png(label: np.ndarray) -> str:
    """Class ids as an 8-bit grey PNG (what the edit CLI reads with --label)."""
    return grey_png(np.asarray(label).astype(np.uint8))


def inst_png(inst: np.ndarray) -> str:
    """Instance ids as a 16-bit grey PNG (what the edit CLI reads with --inst)."""
    return grey_png(inst_uint16(inst))


def inst_uint16(inst: np.ndarray) -> np.ndarray:
    inst = np.asarray(inst)
    if inst.min() < 0 or inst.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"instance ids {int(inst.min())}..{int(inst.max())} do not fit a 16-bit PNG")
    return inst.astype(np.uint16)


def raw_base64(inst: np.ndarray) -> str:
    """Instance ids as base64 little-endian uint16, row-major (the page reads them without a PNG decoder)."""
    return base64.b64encode(inst_uint16(inst).astype("<u2").tobytes()).decode("ascii")


def read_id_png(data: bytes, what: str, *, max_pixels: int) -> np.ndarray:
    """An uploaded single-channel PNG of ids -> (H, W) int64; anything else raises UploadError."""
    if not data:
        raise UploadError(f"{what}: the file is empty")
    if not data.startswith(PNG_SIGNATURE):
        raise UploadError(f"{what} is not a PNG file (it does not start with the PNG signature)")
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG"])
        w, h = image.size
        if w * h > max_pixels:
            raise UploadError(f"{what} is {w}x{h}; the editor takes at most {max_pixels} pixels")
        image.load()
    except UploadError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UploadError(f"{what}: cannot decode the PNG ({e})") from None
    if image.mode not in ID_MODES:
        raise UploadError(f"{what} must be a single-channel PNG of ids (8- or 16-bit grey), got mode {image.mode}; "
                          "colour-coded label images are not id maps")
    return np.asarray(image).astype(np.int64)


def read_upload(label_bytes: bytes, inst_bytes: Optional[bytes], *, label_nc: int,
                max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Uploaded label (+ instance) PNGs -> int32 maps, checked against each other and label_nc."""
    label = read_id_png(label_bytes, "label", max_pixels=max_pixels)
    if label.max() >= label_nc:
        raise UploadError(f"label holds class {int(label.max())} >= label_nc={label_nc}")
    if inst_bytes is None:
        return label.astype(np.int32), label.astype(np.int32)
    inst = read_id_png(inst_bytes, "inst", max_pixels=max_pixels)
    if inst.shape != label.shape:
        raise UploadError(f"inst is {inst.shape[1]}x{inst.shape[0]} but label is {label.shape[1]}x{label.shape[0]}")
    return label.astype(np.int32), inst.astype(np.int32)


def instance_warnings(label: np.ndarray, inst: np.ndarray) -> list[str]:
    """Why an uploaded instance map holds no objects, when it holds none (an upload mistake, not an error)."""
    if (inst >= 1000).any():
        return []
    fix = ("so nothing can be selected, moved or recoloured as an object; upload the 16-bit instance map "
           "(objects as class*1000+k, e.g. Cityscapes *_instanceIds.png)")
    if np.array_equal(inst, label):
        return [f"the instance map equals the label map: it holds no object instances, {fix}"]
    return [f"the instance map holds no object ids (largest id {int(inst.max())} < 1000; an 8-bit PNG cannot "
            f"hold them), {fix}"]


def class_name(class_id: int) -> str:
    return cs.ID_TO_NAME.get(int(class_id), f"class {int(class_id)}")


def instance_table(label: np.ndarray, inst: np.ndarray, clusters: Mapping[int, Optional[int]]) -> list[dict[str, Any]]:
    """One row per region: id, class, class_name, bbox [y0, x0, y1, x1] (end-exclusive), area, cluster."""
    return with_clusters(instance_geometry(label, inst), clusters)


def with_clusters(rows: list[dict[str, Any]], clusters: Mapping[int, Optional[int]]) -> list[dict[str, Any]]:
    return [{**row, "cluster": None if clusters.get(row["id"]) is None else int(clusters[row["id"]])} for row in rows]


def updated_geometry(rows: list[dict[str, Any]], old_label: np.ndarray, old_inst: np.ndarray, label: np.ndarray,
                     inst: np.ndarray) -> list[dict[str, Any]]:
    """instance_geometry(label, inst) from the rows of the old maps: only regions with a changed pixel are redone."""
    diff = (old_inst != inst) | (old_label != label)
    if not diff.any():
        return rows
    touched = set(np.unique(old_inst[diff]).tolist()) | set(np.unique(inst[diff]).tolist())
    kept = [row for row in rows if row["id"] not in touched]
    flat, classes, w = np.asarray(inst).reshape(-1), np.asarray(label).reshape(-1), inst.shape[1]
    for rid in touched:
        where = np.flatnonzero(flat == rid)
        if where.size:  # the class at the region's first pixel, as instance_geometry takes it
            ys, xs = where // w, where % w
            kept.append(_geometry_row(rid, classes[where[0]], (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1),
                                      where.size))
    return sorted(kept, key=lambda row: row["id"])


def instance_geometry(label: np.ndarray, inst: np.ndarray) -> list[dict[str, Any]]:
    """instance_table without the clusters (what depends on the maps alone)."""
    flat = np.asarray(inst).reshape(-1)
    order = np.argsort(flat, kind="stable")
    ids = flat[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    w = inst.shape[1]
    ys, xs = order // w, order % w
    y0, y1 = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts) + 1
    x0, x1 = np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts) + 1
    area = np.diff(np.r_[starts, flat.size])
    classes = np.asarray(label).reshape(-1)[order[starts]]
    rows = []
    for i, rid in enumerate(ids[starts].tolist()):
        rows.append(_geometry_row(rid, classes[i], (y0[i], x0[i], y1[i], x1[i]), area[i]))
    return rows


def _geometry_row(rid: int, cls: Any, bbox: Sequence[Any], area: Any) -> dict[str, Any]:
    """One instance-table row without its cluster: id, class, bbox [y0, x0, y1, x1) and area in pixels."""
    return {"id": rid, "class": int(cls), "class_name": class_name(cls), "bbox": [int(v) for v in bbox],
            "area": int(area)}
