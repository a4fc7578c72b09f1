"""Test helpers shipped with tmt (lhotse-style): tiny media files and corpora made by code.

Import from `tmt.testing.fixtures`; nothing here is used at run time.
"""

from __future__ import annotations

from tmt.testing.fixtures import (
    make_flickr8k_tree,
    make_jpg,
    make_png,
    make_scenes_corpus,
    make_spokencoco_tree,
    make_wav,
)

__all__ = ["make_flickr8k_tree", "make_jpg", "make_png", "make_scenes_corpus", "make_spokencoco_tree", "make_wav"]
