"""Modality tokenizers: speech units, image codes, text wordpieces (DESIGN section 5)."""
