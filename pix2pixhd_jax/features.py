"""Instance feature embedding after training: encode regions with E, cluster per class, feature banks.

Official pix2pixHD (encode_features.py) runs E over the training set, records every instance's
pooled feature and area, keeps per class the instances larger than h*w/64, and clusters them with
k-means into `n_clusters` centres; at test time each instance draws a centre of its class. Here:

  encode_source(...)  E over a source (jitted, progress bar) -> EncodedRegions (one row per region)
  kmeans(...)         seeded k-means++ / Lloyd in numpy (no scikit-learn)
  build_bank(...)     per-class filtering by area and clustering -> FeatureBank (bank_from_regions:
                      with the BankOptions read from config.features)
  FeatureBank         centres per class (+ a defined fallback for classes without centres);
                      saved as `feature_bank.npz` inside the checkpoint step folder it was
                      encoded from (plain arrays, loaded with allow_pickle=False)
  resolve_features(...) a synthesize() feature spec -> G's feature map: bank draws and chosen
                      clusters (region_features), vectors, or E on a photo; feature_map assembles
                      per-region vectors, check_finite_features refuses NaN / inf naming the regions

Regions are instances (model.instance_feat) or label regions (model.label_feat); the class of a
region is read from the label map, so any instance-id convention works. Building the bank of a
trained run end to end is inference.encode_feature_bank.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any, Callable, Mapping, Optional

import ml_collections
import numpy as np
from tqdm import tqdm

from pix2pixhd_jax import storage
from pix2pixhd_jax.data.transforms import transform_example
from pix2pixhd_jax.models import factory

BANK_FILENAME = "feature_bank.npz"


# ----------------------------------------------------------------------------- regions


@dataclasses.dataclass(frozen=True)
class EncodedRegions:
    """One row per (example, region): its class, id, area fraction and pooled feature."""

    example: np.ndarray  # (N,) int64 index in the split
    region_id: np.ndarray  # (N,) int64 instance id (or label id with label_feat)
    class_id: np.ndarray  # (N,) int64 label of the region
    area: np.ndarray  # (N,) float64 pixels / (H * W)
    features: np.ndarray  # (N, F) float32

    @staticmethod
    def concat(parts: list["EncodedRegions"]) -> "EncodedRegions":
        if not parts:
            raise ValueError("no regions were encoded (empty split?)")
        return EncodedRegions(*(np.concatenate([getattr(p, f.name) for p in parts])
                                for f in dataclasses.fields(EncodedRegions)))


def region_records(pooled: np.ndarray, pool_ids: np.ndarray, label: np.ndarray, example: int = 0) -> EncodedRegions:
    """Regions of one example from E's pooled map (H, W, F): every pixel of a region holds its mean."""
    h, w, f = pooled.shape
    ids, first, counts = np.unique(np.asarray(pool_ids).reshape(-1), return_index=True, return_counts=True)
    return EncodedRegions(example=np.full(ids.shape, example, np.int64), region_id=ids.astype(np.int64),
                          class_id=np.asarray(label).reshape(-1)[first].astype(np.int64),
                          area=counts.astype(np.float64) / (h * w),
                          features=np.asarray(pooled, np.float32).reshape(h * w, f)[first])


def encode_source(encode_fn: Callable, source, *, model_cfg: ml_collections.ConfigDict,
                  transform, batch_size: int = 1, num_examples: int = 0, progress: bool = True) -> EncodedRegions:
    """Run E over `source` (deterministic transforms, no flip) and record every region of every example."""
    n = len(source) if not num_examples else min(num_examples, len(source))
    parts = []
    for start in tqdm(range(0, n, batch_size), desc="encode features", unit="batch", disable=not progress):
        examples = [transform_example(source[i], transform, None, train=False) for i in range(start, min(n, start + batch_size))]
        label = np.stack([e["label"] for e in examples])
        inst = np.stack([e["inst"] for e in examples]) if "inst" in examples[0] else None
        if "image" not in examples[0]:
            raise ValueError(f"example {start} of {source!r} has no real image; E encodes photos")
        image = np.stack([e["image"] for e in examples])
        pool = np.asarray(factory.pool_ids(model_cfg, label, inst))
        pooled = np.asarray(encode_fn(image, pool.astype(np.int32)))
        parts += [region_records(pooled[b], pool[b], label[b], start + b) for b in range(len(examples))]
    return EncodedRegions.concat(parts)


def feature_map(pool_ids: np.ndarray, vectors: Mapping[int, Any]) -> np.ndarray:
    """(H, W) region ids + {id: vector or (cluster, vector)} -> (H, W, F) float32: each pixel its region's vector.

    The one assembly of G's feature input from per-region vectors (synthesis and editing). Raises
    KeyError naming regions without a vector, ValueError naming regions whose vector is not finite.
    """
    pool_ids = np.asarray(pool_ids)
    flat = pool_ids.reshape(-1)
    small = bool(flat.size) and flat.min() >= 0 and flat.max() < 1 << 20  # a lookup table by id fits
    ids = np.flatnonzero(np.bincount(flat)) if small else np.unique(flat)
    missing = [i for i in ids.tolist() if i not in vectors]
    if missing:
        raise KeyError(f"no feature for region id(s) {missing[:20]}")
    rows = np.stack([np.asarray(v[1] if isinstance(v, tuple) else v, np.float32)
                     for v in (vectors[i] for i in ids.tolist())])
    check_finite_features(rows, ids, "feature_map")
    if small:
        table = np.zeros((int(ids[-1]) + 1, rows.shape[1]), np.float32)
        table[ids] = rows
        return table[pool_ids]
    return rows[np.searchsorted(ids, pool_ids)]


def check_finite_features(feats: Any, region_ids: Optional[np.ndarray], where: str) -> None:
    """Raise ValueError naming the regions whose features (.., F) hold NaN or inf (they would blank the image).

    The one finiteness check of G's feature input: `region_ids` has the shape of `feats` less its
    last axis (a pool-id map, or one id per row of vectors); None names pixels only.
    """
    feats = np.asarray(feats)
    bad = ~np.isfinite(feats).all(-1)
    if not bad.any():
        return
    if region_ids is None:
        raise ValueError(f"{where}: the features hold NaN or inf at {int(bad.sum())} pixels; one such region turns "
                         "the whole image black")
    regions = sorted(set(np.unique(np.asarray(region_ids)[bad]).tolist()))
    raise ValueError(f"{where}: the feature in region id(s) {regions[:20]} holds NaN or inf; one such region turns "
                     "the whole image black. Give finite values, or rebuild the feature bank")


# ----------------------------------------------------------------------------- k-means


def _sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.maximum((x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :], 0.0)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre drawn with probability proportional to D(x)^2."""
    centers = [x[rng.integers(len(x))]]
    d2 = _sq_dists(x, centers[0][None])[:, 0]
    for _ in range(1, k):
        total = d2.sum()
        idx = rng.integers(len(x)) if total <= 0 else rng.choice(len(x), p=d2 / total)
        centers.append(x[idx])
        d2 = np.minimum(d2, _sq_dists(x, x[idx][None])[:, 0])
    return np.stack(centers)


def kmeans(x: np.ndarray, k: int, *, seed: int, iters: int, n_init: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Cluster rows of x into min(k, len(x)) centres -> (centres (k, F), assignment (N,)).

    Seeded k-means++ then Lloyd iterations (until assignments stop changing or `iters`), best of
    `n_init` restarts by inertia. Clusters are ordered by size (largest first), so cluster 0 is the
    most common look of a class. An empty cluster keeps its previous centre.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"kmeans needs a non-empty (N, F) array, got shape {x.shape}")
    k = min(int(k), len(x))
    if k < 1:
        raise ValueError(f"n_clusters must be >= 1, got {k}")
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(max(1, n_init)):
        centers = _kmeans_pp(x, k, rng)
        assign = np.full(len(x), -1)
        for _ in range(max(1, iters)):
            new_assign = _sq_dists(x, centers).argmin(1)
            if np.array_equal(new_assign, assign):
                break
            assign = new_assign
            sums = np.zeros_like(centers)
            np.add.at(sums, assign, x)
            counts = np.bincount(assign, minlength=k)
            centers = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
        assign = _sq_dists(x, centers).argmin(1)
        inertia = float(((x - centers[assign]) ** 2).sum())
        if best is None or inertia < best[0] - 1e-12:
            best = (inertia, centers, assign)
    _, centers, assign = best
    order = np.argsort(-np.bincount(assign, minlength=k), kind="stable")
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(k)
    return centers[order].astype(np.float32), rank[assign]


# ----------------------------------------------------------------------------- bank


@dataclasses.dataclass
class FeatureBank:
    """Per-class cluster centres of encoded features, plus a defined fallback for every class.

    centers[c]: (k_c, F) centres of class c (only classes with regions above the area threshold);
    sizes[c]: (k_c,) regions per centre; means[c]: (F,) mean feature over all encoded regions of
    class c (any size). Classes without centres use means[c], and classes never seen use zeros
    (the official code leaves those pixels uninitialised).
    """

    feat_num: int
    centers: dict[int, np.ndarray]
    sizes: dict[int, np.ndarray]
    means: dict[int, np.ndarray]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def num_clusters(self, class_id: int) -> int:
        return len(self.centers.get(int(class_id), ()))

    def center(self, class_id: int, cluster: int) -> np.ndarray:
        """The centre `cluster` of class `class_id`, with an error naming what exists."""
        class_id, cluster = int(class_id), int(cluster)
        if class_id not in self.centers:
            raise KeyError(f"the feature bank has no clusters for class {class_id}; classes with clusters: "
                           f"{sorted(self.centers)} (regions smaller than features.min_area_fraction are not clustered)")
        k = len(self.centers[class_id])
        if not 0 <= cluster < k:
            raise IndexError(f"cluster {cluster} of class {class_id} does not exist; the bank holds {k} (0..{k - 1})")
        return self.centers[class_id][cluster]

    def default(self, class_id: int) -> np.ndarray:
        """Fallback feature of a class without centres: its mean encoded feature, else zeros."""
        return self.means.get(int(class_id), np.zeros(self.feat_num, np.float32))

    def draw(self, class_id: int, rng: np.random.Generator) -> tuple[Optional[int], np.ndarray]:
        """(cluster index or None, feature) for one region: a uniform cluster draw as in the official code."""
        k = self.num_clusters(class_id)
        if k == 0:
            return None, self.default(class_id)
        cluster = int(rng.integers(k))
        return cluster, self.centers[int(class_id)][cluster]

    def save(self, path: str) -> str:
        """Write plain arrays (no pickles) to `path` (a .npz file)."""
        arrays = {"meta": np.array(json.dumps({**self.meta, "feat_num": self.feat_num}))}
        for c, v in self.centers.items():
            arrays[f"centers_{c}"] = np.asarray(v, np.float32)
            arrays[f"sizes_{c}"] = np.asarray(self.sizes[c], np.int64)
        for c, v in self.means.items():
            arrays[f"mean_{c}"] = np.asarray(v, np.float32)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        storage.write_bytes(path, buf.getvalue())  # whole: readers never see a half-written bank
        return path

    @staticmethod
    def load(path: str) -> "FeatureBank":
        with storage.open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            centers, sizes, means = {}, {}, {}
            for key in data.files:
                kind, _, c = key.partition("_")
                if kind == "centers":
                    centers[int(c)] = data[key]
                elif kind == "sizes":
                    sizes[int(c)] = data[key]
                elif kind == "mean":
                    means[int(c)] = data[key]
        return FeatureBank(feat_num=int(meta.pop("feat_num")), centers=centers, sizes=sizes, means=means, meta=meta)


def require_bank(bank: Optional[FeatureBank], workdir: Optional[str] = None, step: Optional[int] = None) -> FeatureBank:
    """`bank`, or a ValueError saying how to build the bank of `workdir`'s checkpoint `step`."""
    if bank is None:
        where = f" for {workdir} step {step}" if workdir else ""
        raise ValueError(f"no feature bank{where}: build it with `python -m pix2pixhd_jax.cli.encode_features "
                         f"--workdir {workdir or 'W'}`, or pass features='encode' with a real image, "
                         "or an explicit {instance_id: vector} mapping")
    return bank


def region_features(label: np.ndarray, pool_ids: np.ndarray, chosen: Optional[Mapping[int, Any]] = None, *,
                    bank: Callable[[], FeatureBank], feat_num: int,
                    seed: int = 0) -> dict[int, tuple[Optional[int], np.ndarray]]:
    """region id -> (cluster or None, vector) for one example: chosen entries, the rest drawn from the bank.

    chosen: {region id: cluster index or vector}; `bank()` is called only when a region needs the
    bank, so a model without one still takes explicit vectors. A draw depends only on (seed,
    region id), so editing one region never changes another's draw.
    """
    chosen = {int(k): v for k, v in (chosen or {}).items()}  # JSON keys arrive as strings
    ids, first = np.unique(pool_ids, return_index=True)
    classes = np.asarray(label).reshape(-1)[first]
    present = set(ids.tolist())
    unknown = [k for k in chosen if int(k) not in present]
    if unknown:
        raise KeyError(f"feature given for region id(s) {sorted(unknown)} not in the map; ids present: "
                       f"{sorted(present)[:30]}{' ...' if len(present) > 30 else ''}")
    out = {}
    for rid, cls in zip(ids.tolist(), classes.tolist()):
        spec = chosen.get(rid)
        if spec is None:
            out[rid] = bank().draw(cls, np.random.default_rng([int(seed), int(rid)]))
        elif isinstance(spec, (int, np.integer)):
            out[rid] = (int(spec), bank().center(cls, int(spec)))
        else:
            vec = np.asarray(spec, np.float32).reshape(-1)
            if vec.shape != (feat_num,):
                raise ValueError(f"feature vector for region {rid} has {vec.size} values; model.feat_num={feat_num}")
            out[rid] = (None, vec)
    return out


def resolve_features(spec: Any, label: np.ndarray, inst: Optional[np.ndarray], *, model_cfg: ml_collections.ConfigDict,
                     bank: Callable[[], FeatureBank], encode: Callable, seed: int, image: Optional[np.ndarray] = None,
                     given: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """G's (B, H, W, feat_num) feature input for a batch of label maps, from a synthesize() feature spec.

    spec: None (bank draws), 'encode' (E on `image`), a {region id: cluster | vector} mapping (one
    for all, or a list per example), or an array, already checked and padded as `given`. None for a
    model without features.
    """
    if not factory.uses_features(model_cfg):
        if spec is not None:
            raise ValueError("features were given but this model was trained without model.instance_feat / "
                             "model.label_feat, so its generator takes none")
        return None
    if isinstance(spec, str):
        if spec != "encode":
            raise ValueError(f"features={spec!r}; the only string is 'encode' (E on a real image)")
        if image is None:
            raise ValueError("features='encode' runs E on a real photo: pass image=(B, H, W, 3) in [-1, 1]")
        pool = np.asarray(factory.pool_ids(model_cfg, label, inst))
        feats = encode(image, pool)
        check_finite_features(feats, pool, "features='encode' (E on the image)")
        return feats
    if given is None:
        chosen = spec if isinstance(spec, (list, tuple)) else [spec] * label.shape[0]
        if len(chosen) != label.shape[0]:
            raise ValueError(f"{len(chosen)} feature mappings for a batch of {label.shape[0]}")
        pool = np.asarray(factory.pool_ids(model_cfg, label, inst))
        return np.stack([feature_map(pool[b], region_features(label[b], pool[b], chosen[b], bank=bank,
                                                               feat_num=model_cfg.feat_num, seed=seed))
                         for b in range(label.shape[0])])
    want = label.shape[:3] + (model_cfg.feat_num,)
    if given.ndim != 4 or given.shape != want:
        raise ValueError(f"feature map shape {given.shape} does not match {want}")
    pool = factory.pool_ids(model_cfg, label, inst) if (model_cfg.label_feat or inst is not None) else None
    check_finite_features(given, pool, "the feature map given")
    return given


def build_bank(regions: EncodedRegions, *, n_clusters: int, min_area_fraction: float, seed: int, iters: int,
               n_init: int = 1, meta: Optional[Mapping[str, Any]] = None) -> FeatureBank:
    """Per class: keep regions with area > min_area_fraction, k-means them (fewer centres if fewer regions)."""
    feat_num = regions.features.shape[1]
    centers, sizes, means = {}, {}, {}
    for c in np.unique(regions.class_id).tolist():
        of_class = regions.class_id == c
        means[c] = regions.features[of_class].mean(0).astype(np.float32)
        big = of_class & (regions.area > min_area_fraction)
        if not big.any():
            continue
        # Class-specific seed: adding a class to the data does not reshuffle the others' clusters.
        cent, assign = kmeans(regions.features[big], n_clusters, seed=int(np.random.SeedSequence([seed, c]).generate_state(1)[0]),
                              iters=iters, n_init=n_init)
        centers[c], sizes[c] = cent, np.bincount(assign, minlength=len(cent))
    info = {"n_clusters": n_clusters, "min_area_fraction": min_area_fraction, "kmeans_seed": seed,
            "num_regions": int(len(regions.class_id)), "num_examples": int(len(np.unique(regions.example)))}
    return FeatureBank(feat_num=feat_num, centers=centers, sizes=sizes, means=means, meta={**info, **(meta or {})})


@dataclasses.dataclass(frozen=True)
class BankOptions:
    """What building a feature bank reads from config.features, read once."""

    split: str  # the split encoded (official: the training set)
    num_examples: int  # 0 = the whole split
    batch_size: int
    n_clusters: int
    min_area_fraction: float
    kmeans_seed: int
    kmeans_iters: int
    kmeans_n_init: int

    @classmethod
    def from_config(cls, features_cfg: ml_collections.ConfigDict) -> "BankOptions":
        f = features_cfg
        return cls(split=f.split, num_examples=int(f.num_examples), batch_size=int(f.batch_size),
                   n_clusters=int(f.n_clusters), min_area_fraction=float(f.min_area_fraction),
                   kmeans_seed=int(f.kmeans_seed), kmeans_iters=int(f.kmeans_iters), kmeans_n_init=int(f.kmeans_n_init))


def bank_from_regions(regions: EncodedRegions, options: BankOptions,
                      meta: Optional[Mapping[str, Any]] = None) -> FeatureBank:
    """build_bank with the clustering settings of `options`."""
    return build_bank(regions, n_clusters=options.n_clusters, min_area_fraction=options.min_area_fraction,
                      seed=options.kmeans_seed, iters=options.kmeans_iters, n_init=options.kmeans_n_init, meta=meta)


# ----------------------------------------------------------------------------- checkpoints


def bank_path(workdir: str, step: int) -> str:
    """The bank lives inside the checkpoint step it was encoded from (deleted with that step)."""
    return storage.join(os.fspath(storage.path(workdir)), "checkpoints", str(int(step)), BANK_FILENAME)


def load_bank(workdir: str, step: int) -> Optional[FeatureBank]:
    path = bank_path(workdir, step)
    return FeatureBank.load(path) if storage.exists(path) else None
