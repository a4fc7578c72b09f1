"""Judges for image outputs (text->image, speech->image).

- Scenes corpus: the corpus' own scene parser reads each generated image back
  into a scene graph, which is compared with the caption's scene graph:
  exact-match rate and accuracy per attribute (`tmt.corpora.scenes`).
- Other corpora: CLIP image-image similarity (generated vs. reference image)
  and image-text similarity (generated image vs. caption), when the user gives
  a LOCAL transformers `CLIPModel` directory. Without one: image-token
  agreement (the share of positions where the generated image tokens equal
  the reference image's tokens), with a note that it is a weak proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tmt import TmtError
from tmt.evaluation.metrics import MetricResult

log = logging.getLogger(__name__)

TOKEN_AGREEMENT_NOTE = (
    "image-token agreement: share of positions where the generated image tokens equal the reference "
    "image's tokens; a weak proxy (two different codes can decode to similar images). Give --clip DIR "
    "(a local transformers CLIPModel directory) for CLIP similarities."
)


# --------------------------------------------------------------------- scenes
def scene_scores(
    preds: Sequence[Any],
    refs: Sequence[Any],
    *,
    compare: Callable[[Any, Any], Mapping[str, bool]] | None = None,
    matches: Callable[[Any, Any], bool] | None = None,
    what: str = "scene parser could not read {} of {} images",
) -> MetricResult:
    """Exact-match rate and per-attribute accuracy (percent) of parsed scenes.

    `compare(pred, ref)` gives {attribute: correct}; `matches(pred, ref)` says
    whether the whole scene matches (default: every attribute correct). By
    default both come from `tmt.corpora.scenes`. A `None` prediction (the
    parser could not read the image) counts as wrong on every attribute; `what`
    words the note that counts them.
    """
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if compare is None or matches is None:
        from tmt.corpora import scenes

        compare = compare or scenes.compare_scenes
        matches = matches or scenes.scene_matches
    out = MetricResult()
    if not preds:
        out.unavailable["scene_exact"] = "no images to score"
        return out
    exact = 0
    per_attr: dict[str, list[bool]] = {}
    unparsed = 0
    for p, r in zip(preds, refs, strict=True):
        if p is None:
            unparsed += 1
            continue
        cmp = {k: v for k, v in compare(p, r).items() if k != "all"}  # "all" is the exact match
        for k, ok in cmp.items():
            per_attr.setdefault(k, []).append(bool(ok))
        exact += bool(matches(p, r))
    n = len(preds)
    out.values["scene_exact"] = 100.0 * exact / n
    for k, oks in sorted(per_attr.items()):
        # unparsed images are wrong on every attribute
        out.values[f"scene_{k}"] = 100.0 * sum(oks) / n
    out.extra["scenes_scored"] = n
    if unparsed:
        out.extra["scenes_unparsed"] = unparsed
        out.notes.append(what.format(unparsed, n) + " (counted as wrong)")
    return out


def parse_images(paths: Sequence[str | Path | None]) -> list[Any]:
    """Run the scenes parser on image files; None where a file is missing or unreadable."""
    from PIL import Image

    from tmt.corpora import scenes

    out: list[Any] = []
    for p in paths:
        if p is None or not Path(p).is_file():
            out.append(None)
            continue
        try:
            with Image.open(p) as im:
                out.append(scenes.parse_scene(im.convert("RGB")))
        except Exception as e:  # an unreadable or unparsable output is a wrong answer, not a crash
            log.warning("scene parser failed on %s: %s", p, e)
            out.append(None)
    return out


# ---------------------------------------------------------- token agreement
def token_agreement(hyp_tokens: Sequence[Sequence[int] | np.ndarray], ref_tokens: Sequence[Sequence[int] | np.ndarray]) -> MetricResult:
    """Position-wise agreement of image token sequences (percent, pooled over all positions).

    Sequences of different lengths are compared over the reference length
    (missing hypothesis positions count as wrong).
    """
    if len(hyp_tokens) != len(ref_tokens):
        raise ValueError(f"{len(hyp_tokens)} hypotheses but {len(ref_tokens)} references")
    out = MetricResult(notes=[TOKEN_AGREEMENT_NOTE])
    total = same = exact = 0
    for h, r in zip(hyp_tokens, ref_tokens, strict=True):
        ha, ra = np.asarray(h, dtype=np.int64), np.asarray(r, dtype=np.int64)
        n = min(len(ha), len(ra))
        s = int((ha[:n] == ra[:n]).sum())
        same += s
        total += len(ra)
        exact += int(len(ha) == len(ra) and s == len(ra))
    if total == 0:
        out.unavailable["token_agreement"] = "no reference image tokens"
        return out
    out.values["token_agreement"] = 100.0 * same / total
    out.values["token_exact"] = 100.0 * exact / len(ref_tokens)
    return out


# ---------------------------------------------------------------------- CLIP
class ClipJudge:
    """CLIP similarities from a local transformers `CLIPModel` directory."""

    def __init__(self, model_dir: str | Path, *, device: str = "cpu") -> None:
        import torch
        from transformers import CLIPModel, CLIPProcessor

        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise TmtError(f"{path} is not a transformers CLIPModel directory (no config.json); give a local CLIP checkpoint")
        try:
            self.model = CLIPModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
            self.processor = CLIPProcessor.from_pretrained(str(path), local_files_only=True)
        except Exception as e:
            raise TmtError(f"cannot load CLIP from {path}: {e}") from None
        self.device = device
        self.model_dir = str(path)
        self._torch = torch

    def _image_features(self, images: Sequence[Any]) -> Any:
        inputs = self.processor(images=list(images), return_tensors="pt").to(self.device)
        with self._torch.no_grad():
            f = self.model.get_image_features(**inputs)
        return self._torch.nn.functional.normalize(f, dim=-1)

    def _text_features(self, texts: Sequence[str]) -> Any:
        inputs = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True).to(self.device)
        with self._torch.no_grad():
            f = self.model.get_text_features(**inputs)
        return self._torch.nn.functional.normalize(f, dim=-1)

    def image_image(self, images: Sequence[Any], refs: Sequence[Any]) -> list[float]:
        """Cosine similarity of each generated image with its reference image."""
        a, b = self._image_features(images), self._image_features(refs)
        return [float(x) for x in (a * b).sum(-1).cpu()]

    def image_text(self, images: Sequence[Any], texts: Sequence[str]) -> list[float]:
        """Cosine similarity of each generated image with its caption."""
        a, b = self._image_features(images), self._text_features(texts)
        return [float(x) for x in (a * b).sum(-1).cpu()]


def clip_scores(
    judge: ClipJudge,
    hyp_images: Sequence[str | Path],
    ref_images: Sequence[str | Path | None],
    texts: Sequence[str | None],
    *,
    batch_size: int = 16,
) -> MetricResult:
    """Mean CLIP image-image and image-text cosine similarity (x100, as CLIPScore without the weight)."""
    from PIL import Image

    out = MetricResult()
    ii: list[float] = []
    it: list[float] = []
    for s in range(0, len(hyp_images), batch_size):
        hs = [Image.open(p).convert("RGB") for p in hyp_images[s : s + batch_size]]
        rs = ref_images[s : s + batch_size]
        ts = texts[s : s + batch_size]
        pairs = [(h, Image.open(r).convert("RGB")) for h, r in zip(hs, rs, strict=True) if r is not None and Path(r).is_file()]
        if pairs:
            ii += judge.image_image([p[0] for p in pairs], [p[1] for p in pairs])
        tpairs = [(h, t) for h, t in zip(hs, ts, strict=True) if t]
        if tpairs:
            it += judge.image_text([p[0] for p in tpairs], [str(p[1]) for p in tpairs])
    if ii:
        out.values["clip_image_image"] = 100.0 * float(np.mean(ii))
    else:
        out.unavailable["clip_image_image"] = "no reference images"
    if it:
        out.values["clip_image_text"] = 100.0 * float(np.mean(it))
    else:
        out.unavailable["clip_image_text"] = "no captions"
    out.extra["clip_model"] = judge.model_dir
    return out
