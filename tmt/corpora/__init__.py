"""Corpus preparers: raw media + text -> raw manifests (DESIGN section 4).

- `tmt.corpora.scenes`: the embedded tri-modal corpus (drawn scenes, templated
  captions, synthetic speech) and its scene-graph judge (`parse_scene`).
- `tmt.corpora.flickr8k`: Flickr8k + Flickr8kAudio from a local copy.
- `tmt.corpora.spokencoco`: COCO + SpokenCOCO (Karpathy splits) from a local copy.
"""

from __future__ import annotations

CORPORA: tuple[str, ...] = ("scenes", "flickr8k", "spokencoco")
