"""The VQ-VAE model: grids, shapes, EMA quantizer, dead-code restarts, usage stats."""

from __future__ import annotations

import pytest
import torch

from tmt import TmtError
from tmt.models.vq import VQVAE, EMAQuantizer, ResBlock, VQConfig, codebook_usage, gradient_loss

torch.set_num_threads(1)


def tiny(**kw: object) -> VQConfig:
    base: dict[str, object] = {"image_size": 16, "factor": 4, "channels": [8, 16], "num_res_blocks": 1,
                               "codebook_size": 16, "code_dim": 4}
    base.update(kw)
    return VQConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("image_size", "factor", "grid"),
    [(64, 8, (8, 8)), (64, [16, 8], (4, 8)), ([32, 64], 8, (4, 8)), (16, 1, (16, 16)), (16, [2, 4], (8, 4))],
)
def test_grid_and_forward_shapes(image_size: object, factor: object, grid: tuple[int, int]) -> None:
    cfg = tiny(image_size=image_size, factor=factor)
    assert cfg.grid() == grid
    h, w = cfg.size_hw()
    if h * w > 16 * 16:  # the forward pass only for the small ones (speed)
        return
    m = VQVAE(cfg)
    x = torch.rand(2, 3, h, w) * 2 - 1
    out = m(x)
    assert out.recon.shape == x.shape
    assert out.indices.shape == (2, *grid)
    ids = m.encode(x)
    assert ids.shape == (2, *grid) and ids.dtype == torch.int64
    assert m.decode(ids).shape == x.shape
    assert float(m.decode(ids).abs().max()) <= 1.0


def test_decoder_head_and_weighted_loss() -> None:
    from tmt.models.vq import reconstruction_loss

    m = VQVAE(tiny(head_channels=4))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert m(x).recon.shape == x.shape
    r = torch.zeros(1, 3, 2, 2)
    t = torch.ones(1, 3, 2, 2)
    w = torch.tensor([[[[2.0, 0.0], [1.0, 1.0]]]])
    assert float(reconstruction_loss(r, t, "l1")) == 1.0
    assert float(reconstruction_loss(r, t, "l1+l2")) == 2.0
    assert float(reconstruction_loss(r, t * 2, "l2", w)) == 4.0  # weights with mean 1 keep the scale


def test_bad_configs_are_clear_errors() -> None:
    with pytest.raises(TmtError, match="power of two"):
        VQVAE(tiny(factor=3))
    with pytest.raises(TmtError, match="not divisible"):
        VQVAE(tiny(image_size=20, factor=8))
    with pytest.raises(TmtError, match="int or"):
        tiny(image_size=[1, 2, 3]).size_hw()


def test_ema_codebook_moves_to_data_and_dead_codes_restart() -> None:
    torch.manual_seed(0)
    q = EMAQuantizer(tiny(codebook_size=8, code_dim=2, ema_decay=0.8, dead_code_threshold=0.5))
    q.train()
    # four well separated clusters in 2-D
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    for _ in range(60):
        pts = centres[torch.randint(0, 4, (64,))] + 0.05 * torch.randn(64, 2)
        z = pts.view(4, 4, 4, 2).permute(0, 3, 1, 2)  # (B=4, D=2, h=4, w=4)
        out = q(z)
    q.eval()
    ids = q(centres.view(1, 2, 2, 2).permute(0, 3, 1, 2)).indices.reshape(-1)
    assert len(set(ids.tolist())) == 4  # every cluster has its own code
    # each cluster's code sits on the cluster
    assert torch.allclose(q.embed[ids], centres, atol=0.3)
    # the commitment loss is small once codes sit on the data
    assert float(out.commitment_loss) < 0.05
    # codes never used were moved onto data (restarted), not left at their random init
    assert int(out.restarted) >= 0
    near = torch.cdist(q.embed, centres).min(1).values
    assert bool((near < 1.0).all())


def test_straight_through_gradients_reach_the_encoder() -> None:
    m = VQVAE(tiny())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    out = m(x)
    ((out.recon - x) ** 2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.parameters())


def test_codebook_usage() -> None:
    u = codebook_usage(torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), 8)
    assert u["codes_used"] == 4 and u["codes_used_pct"] == 50.0
    assert u["perplexity"] == pytest.approx(4.0, rel=1e-4)
    assert codebook_usage(torch.zeros(10, dtype=torch.long), 8)["perplexity"] == pytest.approx(1.0)


def test_architecture_options_cosine_codes_and_decoder_blocks() -> None:
    torch.manual_seed(0)
    cfg = tiny(cosine_codes=True, code_dim=4, up_res_blocks=1, decoder_channels=[12, 16], activation="silu",
               norm="group", head_channels=4)
    m = VQVAE(cfg)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    out = m(x)  # a training step: the EMA update keeps the codes on the unit sphere
    assert out.recon.shape == x.shape
    assert torch.allclose(m.quantizer.embed.norm(dim=1), torch.ones(16), atol=1e-5)
    # cosine lookup: the chosen code has the highest cosine similarity with the encoder output
    m.eval()
    z = m.encoder(x).permute(0, 2, 3, 1).reshape(-1, 4)
    cos = torch.nn.functional.normalize(z, dim=1) @ m.quantizer.embed.t()
    assert torch.equal(m.encode(x).reshape(-1), cos.argmax(1))
    # the decoder's extra blocks and channels are there; the default layout is unchanged
    assert any(p.shape[0] == 12 for p in m.decoder.parameters())
    assert sum(isinstance(mod, ResBlock) for mod in m.decoder.modules()) == 1 + 1
    plain = VQVAE(tiny()).state_dict()
    assert not any("act" in k for k in plain)  # relu/no-norm blocks: same weight names as before


def test_gradient_loss() -> None:
    a = torch.zeros(1, 1, 3, 3)
    b = torch.zeros(1, 1, 3, 3)
    b[..., :, 2] = 1.0  # a vertical edge
    assert float(gradient_loss(a, a)) == 0.0
    assert float(gradient_loss(a, b)) == pytest.approx(0.5)  # half the horizontal differences are 1
