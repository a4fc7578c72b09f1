"""Training loops: the translation model trainer, checkpoints, the unit vocoder trainer."""
