"""Neural models: the tmt transformer (fairseq2 blocks), the image VQ-VAE and the unit vocoder."""
