"""The faithfulness judge: image (any resolution) + spec -> per-object verdicts. Deterministic, numpy only.

How an image is read
--------------------
1. Background: median of the border ring -> nearest of the three background colors.
2. Chroma unmixing. Every ParaShapes background and every curated effect (gradient, shadow, lighting)
   is achromatic, so we remove each pixel's gray component: p' = p - mean(p) (a vector in the chroma
   plane). An object pixel is then p' = a * c' for its color c with a = coverage x shading (anti-aliased
   edges give a < 1, blur spreads a, shading scales it by 0.8-1). Each pixel gets the color whose line
   fits best (smallest residual |p' - a c'|) if it fits well and a >= 0.25, else "no object". The soft
   weight w = clip(a, 0, 1) is that color's coverage of the pixel.
3. Objects: for each color, 4-connected components of {w >= 0.4}; each component's region is grown by
   one pixel (to collect the anti-aliased / blurred rim of the same color) and its mass is sum(w)
   (divided by the interior coverage, which curated shading lowers to ~0.8). Components lighter than 40%
   of the smallest possible object, or not shaped like any ParaShapes shape (template residual > FIT_MAX),
   are ignored: that is what keeps presence at zero on pure noise.
4. Attributes of a detection, from its weighted moments:
   position  grid cell of the centroid;
   shape     least-squares template matching (`fit_shape`): each of the three shapes, at the blob's
             centroid and mass, with scale, blur and gain fitted; smallest residual wins. (The skewness
             and diagonal-vs-axis kurtosis are also reported as diagnostics.)
   size      equivalent half-extent sqrt(mass / area_factor[shape]) / 2 vs the geometric mean of the
             small and large half-extents (a 1.37x margin on each side).
5. Matching: object i of the spec is "present" when a detection of its color exists (colors are unique
   per scene); its attributes are read from the heaviest such detection. Every other detection is an
   extra (hallucinated) object. scene_exact = background right, every object exact, no extra objects.

Images larger than 128 px are box-downsampled to 128 px first (the scene's smallest feature is ~10 px at
128), which keeps the judge fast and resolution-independent.
"""
from __future__ import annotations

import math
from functools import lru_cache
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from .components import dilate, label_components
from .render import coverage, shape_sdf
from .spec import SceneSpec, as_spec
from .vocab import AREA_FACTOR, BACKGROUNDS, COLORS, HALF_EXTENT, POSITIONS, SHAPES, mention_bucket, position_of

ANALYSIS_MAX = 128
_COLOR_NAMES = tuple(COLORS)
_BG_NAMES = tuple(BACKGROUNDS)
_C = np.asarray([COLORS[c] for c in _COLOR_NAMES], np.float32)  # (8, 3)
_CC = _C - _C.mean(axis=1, keepdims=True)  # (8, 3) chroma vectors c'
_CC_NORM2 = (_CC ** 2).sum(axis=1)  # (8,)
_BG = np.asarray([BACKGROUNDS[b] for b in _BG_NAMES], np.float32)  # (3, 3)

A_MIN = 0.25  # weakest pixel coverage that may count as object color
A_MAX = 1.4  # allow some over-saturation (model outputs)
CORE = 0.4  # a component's core pixels
MIN_MASS_FRAC = 0.4  # of the smallest object (small triangle)
SIZE_THRESHOLD = math.sqrt(HALF_EXTENT["small"] * HALF_EXTENT["large"])  # 0.1025 of the canvas
SMALLEST_AREA = AREA_FACTOR["triangle"] * (2 * HALF_EXTENT["small"]) ** 2  # canvas fraction


@dataclass
class Detection:
    """One detected object (a connected blob of one color)."""

    color: str
    position: str
    size: str
    shape: str
    mass: float  # fraction of the canvas area
    x: float  # centroid, canvas units (0..1, y down)
    y: float
    half_extent: float  # equivalent half-extent, canvas units
    skew: float
    kurt_diff: float
    fit_error: float  # template residual / mass of the best shape (0 = perfect)


@dataclass
class Analysis:
    """Everything the judge reads from an image, independent of any spec."""

    background: str
    background_rgb: tuple[float, float, float]
    detections: list[Detection]
    resolution: tuple[int, int]  # analysed (H, W)


def to_rgb_array(image: Any) -> np.ndarray:
    """Accept (H, W, 3) uint8/float[0,1] numpy, a PIL image, or a torch (3, H, W) tensor in [0, 1].

    Returns float32 (H, W, 3) in 0..255.
    """
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
        return np.asarray(image.convert("RGB"), np.float32)
    if hasattr(image, "detach"):  # torch tensor (3, H, W) in [0, 1]
        t = image.detach().float().cpu()
        if t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) tensor, got {tuple(t.shape)}")
        return (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).astype(np.float32)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    return (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0)


def _downsample(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    if max(h, w) <= ANALYSIS_MAX:
        return arr
    from PIL import Image

    s = ANALYSIS_MAX / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(img.resize(size, Image.BOX), np.float32)


def _background(arr: np.ndarray) -> tuple[str, np.ndarray]:
    h, w = arr.shape[:2]
    b = max(1, min(h, w) // 32)
    ring = np.concatenate([arr[:b].reshape(-1, 3), arr[-b:].reshape(-1, 3),
                           arr[:, :b].reshape(-1, 3), arr[:, -b:].reshape(-1, 3)])
    med = np.median(ring, axis=0)
    k = int(np.argmin(((_BG - med) ** 2).sum(axis=1)))
    return _BG_NAMES[k], med


def classify_pixels(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel color label (H, W) int (-1 = no object color), its soft coverage w (H, W) in [0, 1],
    and the raw (unthresholded, linear) coverage a (H, W, 8) along every color's chroma line."""
    p = arr - arr.mean(axis=2, keepdims=True)  # (H, W, 3) chroma
    a = (p @ _CC.T) / _CC_NORM2  # (H, W, 8) coverage along each color's chroma line
    fit = a[..., None] * _CC  # (H, W, 8, 3)
    res = np.sqrt(((p[..., None, :] - fit) ** 2).sum(axis=-1))  # (H, W, 8) residual
    # a fit must explain most of the pixel's chroma: residual small relative to the fitted chroma
    ok = (a >= A_MIN) & (a <= A_MAX) & (res <= 10.0 + 0.45 * a * np.sqrt(_CC_NORM2))
    res = np.where(ok, res, np.inf)
    label = np.argmin(res, axis=2)  # (H, W)
    valid = np.isfinite(np.take_along_axis(res, label[..., None], axis=2)[..., 0])
    w = np.clip(np.take_along_axis(a, label[..., None], axis=2)[..., 0], 0.0, 1.0)
    label = np.where(valid, label, -1)
    return label.astype(np.int32), np.where(valid, w, 0.0).astype(np.float32), a


def _shape_features(wt: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[float, float, float, float, float]:
    """(mass, cx, cy, skew_y, kurt_diff) from weights wt at pixel centres (xs, ys)."""
    m = float(wt.sum())
    cx, cy = float((wt * xs).sum() / m), float((wt * ys).sum() / m)
    dx, dy = xs - cx, ys - cy
    u, v = (dx + dy) / math.sqrt(2.0), (dx - dy) / math.sqrt(2.0)

    def mom(z: np.ndarray, k: int) -> float:
        return float((wt * z ** k).sum() / m)

    mx2, my2 = mom(dx, 2), mom(dy, 2)
    skew = mom(dy, 3) / max(my2, 1e-9) ** 1.5
    k2 = 0.5 * (mx2 + my2)
    k4_axis = (mom(dx, 4) - 3 * mx2 ** 2) + (mom(dy, 4) - 3 * my2 ** 2)
    k4_diag = (mom(u, 4) - 3 * mom(u, 2) ** 2) + (mom(v, 4) - 3 * mom(v, 2) ** 2)
    kurt_diff = (k4_diag - k4_axis) / (2.0 * max(k2, 1e-9) ** 2)
    return m, cx, cy, skew, kurt_diff


#: a detection must look like one of the three shapes: true objects fit with error <= 0.55 even at 32 px
#: after mild blur+noise, blobs in pure noise with >= 0.87 (docs/parashapes.md, "calibration")
FIT_MAX = 0.7
QUICK_REJECT = 2.0
TEMPLATE_BLURS = (0.0, 0.45, 0.8, 1.1)  # px; blur of the observed image is unknown, so it is fitted
TEMPLATE_SCALES = (0.88, 0.94, 1.0, 1.06, 1.12)  # the mass-derived size is fitted too (rim loss, shading)


@lru_cache(maxsize=512)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) Gaussian blur operator with edge replication, so blurring a window is two small matmuls."""
    r = max(1, int(math.ceil(3 * sigma)))
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    m = np.zeros((n, n))
    for i in range(n):
        for off, wgt in zip(x, k):
            m[i, min(n - 1, max(0, i + off))] += wgt
    return m


def fit_shape(obs: np.ndarray, cx: float, cy: float, mass: float) -> tuple[str, dict[str, float]]:
    """Least-squares template match of an observed coverage map against the three shapes.

    obs: (H, W) linear coverage of one color (0 on other colors' pixels). For each shape the template is
    centred on the detection's centroid, sized from its mass (so shapes compete at equal area), and the
    nuisance parameters -- scale (x0.88..1.12), blur (0..1.1 px) and gain -- are fitted; the shape with
    the smallest residual wins. A matched filter uses every pixel, so it is far less sensitive to noise
    than higher-order moments. Returns (shape, residual per shape / mass).
    """
    h_img, w_img = obs.shape
    r = math.sqrt(mass / (4.0 * AREA_FACTOR["triangle"])) * 1.5 + 3.0  # covers every candidate + blur
    y0, y1 = max(0, int(cy - r)), min(h_img, int(math.ceil(cy + r)) + 1)
    x0, x1 = max(0, int(cx - r)), min(w_img, int(math.ceil(cx + r)) + 1)
    win = obs[y0:y1, x0:x1].astype(np.float64)
    gy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    gx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    ww = float((win ** 2).sum())
    errs: dict[str, float] = {}
    # cheap screen: one mid-blur disc. Real objects of any shape fit it with error < QUICK_REJECT (all
    # three shapes are compact blobs); noise blobs are far off, and skipping their full fit keeps scoring
    # pure-noise images fast.
    h0 = math.sqrt(mass / (4.0 * AREA_FACTOR["circle"]))
    t0 = coverage(shape_sdf("circle", gx - cx, gy - cy, h0)).astype(np.float64)
    t0 = _blur_matrix(t0.shape[0], 0.45) @ t0 @ _blur_matrix(t0.shape[1], 0.45).T
    quick = float(((win - t0) ** 2).sum()) / max(mass, 1e-6)
    if quick > QUICK_REJECT:
        return "circle", {shape: quick for shape in SHAPES}
    for shape in SHAPES:
        best = math.inf
        for scale in TEMPLATE_SCALES:
            h = scale * math.sqrt(mass / (4.0 * AREA_FACTOR[shape]))
            by = cy - (h / 3.0 if shape == "triangle" else 0.0)  # bbox centre from centroid
            t = coverage(shape_sdf(shape, gx - cx, gy - by, h)).astype(np.float64)  # (h, w)
            for sigma in TEMPLATE_BLURS:
                tb = _blur_matrix(t.shape[0], sigma) @ t @ _blur_matrix(t.shape[1], sigma).T if sigma > 0 else t
                tt = float((tb * tb).sum())
                gain = min(1.4, max(0.6, float((win * tb).sum()) / max(tt, 1e-9)))
                best = min(best, ww - 2 * gain * float((win * tb).sum()) + gain * gain * tt)
        errs[shape] = best / max(mass, 1e-6)
    return min(errs, key=errs.__getitem__), errs


def analyze_image(image: Any) -> Analysis:
    """Read background and all objects from an image (no spec needed)."""
    arr = _downsample(to_rgb_array(image))
    h, w = arr.shape[:2]
    if min(h, w) < 8:
        raise ValueError(f"image too small to score: {w}x{h}")
    background, bg_rgb = _background(arr)
    label, wt, a = classify_pixels(arr)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5  # pixel centres
    area = float(h * w)
    min_mass = MIN_MASS_FRAC * SMALLEST_AREA * area
    grow = 1 if max(h, w) <= 64 else 2
    other_strong = (label >= 0) & (wt >= CORE)
    dets: list[Detection] = []
    for k, cname in enumerate(_COLOR_NAMES):
        is_k = label == k
        core = is_k & (wt >= CORE)
        if not core.any():
            continue
        comp, n = label_components(core)
        # Cheap screen before any per-component work: the core alone must carry a good part of the
        # minimum mass (real objects' cores carry most of theirs; pure noise makes many 1-3 px specks).
        core_mass = np.bincount(comp[core], weights=wt[core], minlength=n)
        for j in np.flatnonzero(core_mass >= 0.5 * min_mass):
            # grow the core by its anti-aliased/blurred rim of the same color
            region = dilate(comp == j, grow) & is_k
            # curated shading scales coverage by ~0.8: normalise by the interior level so mass means area
            peak = float(np.percentile(wt[comp == j], 75))
            wk = np.minimum(wt[region] / max(peak, 0.5), 1.0)
            if wk.sum() < min_mass:
                continue
            m, cx, cy, skew, kd = _shape_features(wk, ys[region], xs[region])
            # template matching on the *linear* coverage (unthresholded: noise stays zero-mean, so it
            # does not favour any template), with pixels of other colors zeroed
            # (only confidently-other pixels are zeroed: a faint rim pixel of this object that noise
            # labelled as a neighbouring hue must still count for this object)
            obs = np.where(other_strong & ~is_k, 0.0, np.clip(a[..., k] / max(peak, 0.5), -0.5, 1.3))
            shape, errs = fit_shape(obs, cx, cy, m)
            if errs[shape] > FIT_MAX:
                continue  # not shaped like any ParaShapes object: noise or a smear
            # equivalent half-extent in canvas units (normalised by the geometric mean side)
            he = math.sqrt(m / (4.0 * AREA_FACTOR[shape])) / math.sqrt(area)
            row = min(2, max(0, int(3.0 * cy / h)))
            col = min(2, max(0, int(3.0 * cx / w)))
            dets.append(Detection(
                color=cname, position=position_of(row, col), size="large" if he >= SIZE_THRESHOLD else "small",
                shape=shape, mass=m / area, x=cx / w, y=cy / h, half_extent=he, skew=skew, kurt_diff=kd,
                fit_error=errs[shape]))
    return Analysis(background=background, background_rgb=tuple(float(c) for c in bg_rgb), detections=dets,
                    resolution=(h, w))


def score_analysis(analysis: Analysis, spec: SceneSpec | Mapping[str, Any]) -> dict[str, Any]:
    """Judge an `Analysis` against a spec. See `score_scene`."""
    spec = as_spec(spec)
    by_color: dict[str, list[Detection]] = {}
    for d in analysis.detections:
        by_color.setdefault(d.color, []).append(d)
    objects = []
    matched = 0
    for o, word in zip(spec.objects, spec.mention_words()):
        cands = sorted(by_color.get(o.color, []), key=lambda d: -d.mass)
        det = cands[0] if cands else None
        matched += det is not None
        # color confusion: heaviest detection whose centroid lies in the object's cell, any color
        in_cell = [d for d in analysis.detections if d.position == o.position]
        color_at_cell = max(in_cell, key=lambda d: d.mass).color if in_cell else None
        present = det is not None
        r = {
            "color": o.color, "bucket": mention_bucket(word), "present": present,
            "position": present and det.position == o.position,
            "size": present and det.size == o.size,
            "shape": present and det.shape == o.shape,
            "pred": None if det is None else {"position": det.position, "size": det.size, "shape": det.shape},
            "truth": {"position": o.position, "size": o.size, "shape": o.shape},
            "color_at_cell": color_at_cell,
        }
        r["exact"] = bool(r["present"] and r["position"] and r["size"] and r["shape"])
        objects.append(r)
    extra = len(analysis.detections) - matched
    bg_ok = analysis.background == spec.background
    exact = [r["exact"] for r in objects]
    return {
        "id": spec.id,
        "scene_exact": bool(bg_ok and all(exact) and extra == 0),
        "background": bg_ok,
        "background_pred": analysis.background,
        "object_exact": sum(exact) / len(exact),
        "extra_objects": extra,
        "objects": objects,
        "extras": [asdict(d) for d in analysis.detections
                   if not any(d is max(by_color[o.color], key=lambda e: e.mass)
                              for o in spec.objects if o.color == d.color)],
    }


def score_scene(image: Any, spec: SceneSpec | Mapping[str, Any]) -> dict[str, Any]:
    """Score one image against its spec.

    Returns {"id", "scene_exact": bool, "background": bool, "background_pred", "object_exact": float,
    "extra_objects": int, "objects": [per spec object: {"color", "bucket", "present", "position", "size",
    "shape", "exact", "pred", "truth", "color_at_cell"}], "extras": [detections not matched to the spec]}.
    Attribute verdicts are unconditional: an object that is absent counts as wrong position/size/shape.
    """
    return score_analysis(analyze_image(image), spec)


__all__ = ["Analysis", "Detection", "analyze_image", "classify_pixels", "score_analysis", "score_scene",
           "to_rgb_array", "POSITIONS"]
