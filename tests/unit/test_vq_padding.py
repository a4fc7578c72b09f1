"""Replicate padding in the VQ-VAE (issue 18 section 0): plain backgrounds get one code everywhere,
shapes are unchanged, and tokenizers saved before the option load with their zero padding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tmt import TmtError
from tmt.models.vq import VQVAE, VQConfig
from tmt.tokenizers.base import load_tokenizer
from tmt.tokenizers.image import ImageTokenizer

torch.set_num_threads(1)


def tiny(**kw: Any) -> VQConfig:
    base: dict[str, Any] = {"image_size": 16, "factor": 4, "channels": [8, 16], "num_res_blocks": 1,
                            "codebook_size": 16, "code_dim": 4, "head_channels": 4}
    base.update(kw)
    return VQConfig(**base)


def _padded_convs(m: nn.Module) -> list[nn.Conv2d]:
    return [c for c in m.modules() if type(c) is nn.Conv2d and c.padding != (0, 0)]


def test_replicate_padding_keeps_shapes_and_weights() -> None:
    torch.manual_seed(0)
    zeros, rep = VQVAE(tiny()), VQVAE(tiny(padding="replicate"))
    convs = _padded_convs(rep)
    assert convs and all(c.padding_mode == "replicate" for c in convs)
    assert all(c.padding_mode == "zeros" for c in _padded_convs(zeros))
    # the same parameters: a state dict moves between the two
    assert {k: v.shape for k, v in zeros.state_dict().items()} == {k: v.shape for k, v in rep.state_dict().items()}
    rep.load_state_dict(zeros.state_dict())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert rep(x).recon.shape == x.shape
    assert rep.encode(x).shape == (2, 4, 4)
    assert rep.decode(rep.encode(x)).shape == x.shape


def test_a_plain_image_gets_one_code_everywhere_only_with_replicate_padding() -> None:
    torch.manual_seed(0)
    zeros = VQVAE(tiny())
    rep = VQVAE(tiny(padding="replicate"))
    rep.load_state_dict(zeros.state_dict())
    plain = torch.full((1, 3, 16, 16), -0.1)
    z_rep = rep.encoder(plain)
    # every latent vector is the same: border patches are not a class of their own
    assert torch.allclose(z_rep, z_rep[..., :1, :1].expand_as(z_rep), atol=1e-5)
    z_zero = zeros.encoder(plain)
    assert not torch.allclose(z_zero, z_zero[..., :1, :1].expand_as(z_zero), atol=1e-3)


def test_unknown_padding_is_a_card_error() -> None:
    with pytest.raises(TmtError, match="padding 'reflect'"):
        tiny(padding="reflect").check()


def _card(padding: str | None) -> dict[str, Any]:
    model: dict[str, Any] = {"image_size": 16, "factor": 4, "channels": [8, 16], "num_res_blocks": 1,
                             "codebook_size": 16, "code_dim": 4}
    if padding is not None:
        model["padding"] = padding
    return {"class": "image-vq", "name": "tiny-vq", "model": model, "train": {"steps": 1}}


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(3)]


def test_a_tokenizer_saved_before_the_option_loads_with_zero_padding(tmp_path: Path) -> None:
    torch.manual_seed(1)
    old = ImageTokenizer(_card(None))
    old.save(tmp_path / "old")
    info_path = tmp_path / "old" / "tokenizer.json"
    info = json.loads(info_path.read_text())
    del info["card"]["model"]["padding"]  # as written before the option existed
    info_path.write_text(json.dumps(info))
    again = load_tokenizer(tmp_path / "old")
    assert isinstance(again, ImageTokenizer)
    assert again.cfg.model.padding == "zeros"
    assert all(c.padding_mode == "zeros" for c in _padded_convs(again.model))
    assert again.fingerprint == old.fingerprint
    imgs = _images()
    assert all((a == b).all() for a, b in zip(old.encode(imgs), again.encode(imgs), strict=True))


def test_padding_is_recorded_in_the_card_and_the_fingerprint(tmp_path: Path) -> None:
    torch.manual_seed(2)
    rep = ImageTokenizer(_card("replicate"))
    rep.save(tmp_path / "rep")
    zeros = ImageTokenizer(_card("zeros"), VQVAE(VQConfig(**_card("zeros")["model"])))
    zeros.model.load_state_dict(rep.model.state_dict())
    zeros.save(tmp_path / "zeros")
    assert rep.fingerprint != zeros.fingerprint  # same weights, other padding: other tokens
    again = load_tokenizer(tmp_path / "rep")
    assert isinstance(again, ImageTokenizer)
    assert again.card["model"]["padding"] == "replicate"
    assert all(c.padding_mode == "replicate" for c in _padded_convs(again.model))
    imgs = _images()
    assert all((a == b).all() for a, b in zip(rep.encode(imgs), again.encode(imgs), strict=True))


def test_a_local_encoder_keeps_each_code_to_its_own_patch() -> None:
    torch.manual_seed(0)
    wide, local = VQVAE(tiny(image_size=32, num_res_blocks=2)), VQVAE(tiny(image_size=32, num_res_blocks=2,
                                                                           encoder_code_kernel=1))
    assert {k: v.shape for k, v in local.decoder.state_dict().items()} == \
        {k: v.shape for k, v in wide.decoder.state_dict().items()}  # the decoder is the same
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    moved = x.clone()
    moved[..., :4, :4] = 1.0  # change the top-left patch only
    for model, far_changes in ((local, False), (wide, True)):
        z, z_moved = model.encoder(x), model.encoder(moved)  # (1, D, 8, 8): 4-px patches
        assert not torch.allclose(z[..., 0, 0], z_moved[..., 0, 0])
        # patches beyond the strided stem's reach (10 px at factor 4) see nothing of the change when local
        assert torch.allclose(z[..., 4:, 4:], z_moved[..., 4:, 4:]) != far_changes
    with pytest.raises(TmtError, match="encoder_code_kernel 5"):
        tiny(encoder_code_kernel=5).check()
