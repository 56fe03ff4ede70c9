"""Behaviour of the assembled model on tiny variants (CPU, seconds)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lvg.config import LatentConfig, get_config
from lvg.modeling import build_model
from lvg.modeling.pixel_decoder import POSITION_CHANNELS, position_table
from tests.modeling.conftest import make_inputs

TINY = ["lvg-tiny", "lvg-tiny-nolatent", "lvg-tiny-gres", "lvg-tiny-xy", "lvg-tiny-xy-stem", "lvg-tiny-xy-stem-tokens",
        "lvg-tiny-xy-stem-fine", "lvg-tiny-xy-stem-refine", "lvg-tiny-xy-stem-relpos",
        "lvg-tiny-xy-stem-relpos-tokens", "lvg-tiny-xy-stem-relpos-branch", "lvg-tiny-xy-stem-relpos-branch-tokens",
        "lvg-tiny-p16"]


@pytest.mark.parametrize("name", TINY)
def test_forward_shapes_and_ranges(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    cfg = model.cfg
    image, ids, mask = make_inputs(cfg, batch=3)
    with torch.no_grad():
        out = model(image, ids, mask, return_attention=True)
    n = cfg.latent.num_expressions
    s = cfg.prob_size
    side = {(480, 4): 120, (480, 2): 240, (320, 4): 80}[cfg.encoder.img_size, cfg.head.map_stride]
    assert out["prob"].shape == (3, s, s) and s == side
    assert out["logits"].shape == (3, 1 + n, s, s)
    assert out["text_embedding"].shape == (3, cfg.head.embed_dim)
    assert out["latent_embeddings"].shape == (3, n, cfg.head.embed_dim)
    assert torch.isfinite(out["prob"]).all() and (out["prob"] >= 0).all() and (out["prob"] <= 1).all()
    # Eq. 9: the map is the mean of the per-expression sigmoids.
    torch.testing.assert_close(out["prob"], out["logits"].sigmoid().mean(1))
    g = cfg.encoder.grid
    assert out["attention"].shape == (3, 1 + n, g, g)
    assert (out["attention"].sum(dim=(2, 3)) <= 1 + 1e-5).all()
    assert ("no_target_logit" in out) == cfg.head.gres
    if cfg.head.gres:
        assert out["no_target_logit"].shape == (3,)


@pytest.mark.parametrize("name", TINY)
def test_backward_reaches_every_learnable_parameter(name):
    torch.manual_seed(0)
    model = build_model(name).train()
    image, ids, mask = make_inputs(model.cfg, batch=2)
    out = model(image, ids, mask)
    loss = out["prob"].mean() + out["text_embedding"].pow(2).mean()
    if out["latent_embeddings"].numel():
        loss = loss + out["latent_embeddings"].pow(2).mean()
    if "no_target_logit" in out:
        loss = loss + out["no_target_logit"].sum()
    loss.backward()
    # With latent expressions the visual class token is replaced by s_V (Sec. 3.1): it cannot learn.
    frozen = {"beit3.vision_embed.cls_token"} if model.cfg.latent.enabled else set()
    # Behind a zero projection the image stem and the refiner's first convolutions learn from the second step
    # on (their own tests show it).
    behind_zero = ("pixel_decoder.stem.", "stem_tokens.down.", "mask_refiner.from_", "mask_refiner.mid.",
                   "shape_branch.down.")
    frozen |= {n for n, _ in model.named_parameters() if n.startswith(behind_zero)}
    for pname, p in model.named_parameters():
        assert torch.isfinite(p.grad).all() if p.grad is not None else True, pname
        if pname in frozen:
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{pname} got no gradient"


@pytest.mark.parametrize("name", TINY)
def test_eval_is_deterministic(name):
    model = build_model(name).eval()
    image, ids, mask = make_inputs(model.cfg)
    with torch.no_grad():
        a, b = model(image, ids, mask), model(image, ids, mask)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("name", TINY)
def test_padding_tokens_do_not_change_the_output(name):
    torch.manual_seed(1)
    model = build_model(name).eval()
    image, ids, mask = make_inputs(model.cfg, batch=2, lengths=(5, 9))
    other = ids.clone()
    other[~mask] = torch.randint(4, model.cfg.encoder.vocab_size, (int((~mask).sum()),))
    with torch.no_grad():
        a, b = model(image, ids, mask), model(image, other, mask)
    for key in ("prob", "text_embedding", "latent_embeddings"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    if "no_target_logit" in a:
        torch.testing.assert_close(a["no_target_logit"], b["no_target_logit"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("training", [False, True])
def test_subject_is_a_real_word(training):
    torch.manual_seed(2)
    model = build_model("lvg-tiny").train(training)
    lengths = (3, 4, 9, 16, 2)  # 2 = bos eos only: falls back to the eos slot
    image, ids, mask = make_inputs(model.cfg, batch=len(lengths), lengths=lengths)
    for _ in range(5):  # Gumbel noise differs per call in training
        with torch.set_grad_enabled(training):
            idx = model(image, ids, mask)["subject_index"]
        for i, n in enumerate(lengths):
            if n > 2:
                assert 1 <= int(idx[i]) <= n - 2, (i, n, int(idx[i]))  # a word: not bos, eos or padding
            else:
                assert int(idx[i]) == 1


def test_target_patch_mask_is_sim_at_least_mean():
    torch.manual_seed(3)
    model = build_model("lvg-tiny").eval()
    seen = []

    def hook(module, args, output):
        patches, t_cls, _ = args
        seen.append((patches.detach(), t_cls.detach(), output[1]))

    handles = [m.register_forward_hook(hook) for m in model.concept_injectors]
    image, ids, mask = make_inputs(model.cfg, batch=3)
    with torch.no_grad():
        model(image, ids, mask)
    for h in handles:
        h.remove()
    assert len(seen) == model.cfg.encoder.depth - 1
    for patches, t_cls, got in seen:
        sim = (patches.double() * t_cls.double()[:, None]).sum(-1)  # (B, n)
        expected = sim >= sim.mean(dim=1, keepdim=True)
        close = (sim - sim.mean(dim=1, keepdim=True)).abs() < 1e-4 * sim.abs().max()
        assert got.dtype == torch.bool and got.shape == sim.shape
        assert torch.equal(got[~close], expected[~close])
        assert got.sum(dim=1).min() >= 1


def test_subject_distributor_and_injector_touch_only_their_slots():
    torch.manual_seed(4)
    model = build_model("lvg-tiny").eval()
    lat = model.cfg.latent
    latent = torch.randn(2, lat.num_tokens, model.cfg.encoder.embed_dim)
    s_v = torch.randn(2, model.cfg.encoder.embed_dim)
    out = model.subject_distributor(latent, s_v)
    pos = 0
    for k in lat.lengths:
        torch.testing.assert_close(out[:, pos + 1], s_v)  # subject slot
        torch.testing.assert_close(out[:, pos], latent[:, pos])  # class token untouched
        torch.testing.assert_close(out[:, pos + 2 : pos + 2 + k], latent[:, pos + 2 : pos + 2 + k])
        pos += k + 2
    patches = torch.randn(2, model.cfg.encoder.num_patches, model.cfg.encoder.embed_dim)
    new, _ = model.concept_injectors[0](patches, s_v, latent)
    pos = 0
    for k in lat.lengths:
        torch.testing.assert_close(new[:, pos : pos + 2], latent[:, pos : pos + 2])
        assert not torch.allclose(new[:, pos + 2 : pos + 2 + k], latent[:, pos + 2 : pos + 2 + k])
        pos += k + 2


@pytest.mark.parametrize(
    "latent",
    [
        LatentConfig(lengths=(4,), dropout=(0.2,), num_concepts=5),
        LatentConfig(lengths=(2, 3, 4), dropout=(0.1, 0.1, 0.1), num_concepts=5),
        LatentConfig(lengths=(2, 3), num_concepts=5, subject_distributor=False),
        LatentConfig(lengths=(2, 3), num_concepts=5, concept_injector=False),
        LatentConfig(lengths=(2, 3), num_concepts=5, threshold="none"),
        LatentConfig(lengths=(2, 3), num_concepts=5, threshold="topk", topk=10),
        LatentConfig(lengths=(2, 3), num_concepts=5, concept_init="normal"),
        LatentConfig(lengths=(2, 3), num_concepts=5, vci_norm=True),
        LatentConfig(lengths=(2, 3), num_concepts=5, vci_norm=True, concept_gain=10.0),
    ],
)
def test_ablation_switches_build_and_run(latent):
    cfg = get_config("lvg-tiny").replace(latent=latent)
    model = build_model(cfg).train()
    image, ids, mask = make_inputs(cfg, batch=2)
    out = model(image, ids, mask)
    assert out["latent_embeddings"].shape[1] == len(latent.lengths)
    out["prob"].mean().backward()
    assert hasattr(model, "subject_distributor") and (model.subject_distributor is None) != latent.subject_distributor
    assert (model.concept_injectors is None) != latent.concept_injector


def test_vci_norm_makes_the_injector_blind_to_token_scale():
    """Large tokens saturate the plain VCI's softmaxes; with ``vci_norm`` the injector reads them at unit scale."""
    torch.manual_seed(5)
    lat = LatentConfig(lengths=(2, 3), num_concepts=5)
    d = get_config("lvg-tiny").encoder.embed_dim
    latent = torch.randn(2, lat.num_tokens, d)
    s_v, patches = torch.randn(2, d), torch.randn(2, get_config("lvg-tiny").encoder.num_patches, d)
    slots = list(lat.attribute_slots)
    for norm in (False, True):
        model = build_model(get_config("lvg-tiny").replace(latent=dataclasses.replace(lat, vci_norm=norm)))
        injector = model.concept_injectors[0]
        small, mask_small = injector(patches, s_v, latent)
        big, mask_big = injector(patches * 1000, s_v * 1000, latent * 1000)
        # Unnormalised, the new attribute tokens are mixtures of raw patches: scale them back to compare.
        big_attrs = big[:, slots] if norm else big[:, slots] / 1000
        assert torch.equal(mask_small, mask_big)
        assert torch.allclose(big_attrs, small[:, slots], atol=1e-4) == norm
    # The gains and biases of both norms learn.
    small[:, slots].pow(2).sum().backward()
    for name, p in injector.norms.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_concept_gain_scales_the_concept_tokens_and_learns():
    torch.manual_seed(6)
    lat = LatentConfig(lengths=(2, 3), num_concepts=5, vci_norm=True)
    model = build_model(get_config("lvg-tiny").replace(latent=dataclasses.replace(lat, concept_gain=10.0)))
    injector = model.concept_injectors[0]
    torch.testing.assert_close(injector.concept_tokens(), injector.concepts * 10)
    d = model.cfg.encoder.embed_dim
    patches, s_v = torch.randn(2, model.cfg.encoder.num_patches, d), torch.randn(2, d)
    new, _ = injector(patches, s_v, torch.randn(2, lat.num_tokens, d))
    new[:, list(lat.attribute_slots)].pow(2).sum().backward()
    assert injector.log_concept_gain.grad is not None and injector.log_concept_gain.grad.abs() > 0
    # Without a gain the injector has no such parameter and reads its concept tokens as they are.
    plain = build_model(get_config("lvg-tiny").replace(latent=lat)).concept_injectors[0]
    assert plain.log_concept_gain is None and plain.concept_tokens() is plain.concepts


def test_topk_rule_selects_k_patches():
    cfg = get_config("lvg-tiny").replace(latent=LatentConfig(lengths=(2, 3), num_concepts=5, threshold="topk", topk=10))
    model = build_model(cfg).eval()
    image, ids, mask = make_inputs(cfg, batch=2)
    with torch.no_grad():
        out = model(image, ids, mask)
    assert out["patch_mask"].sum(dim=1).tolist() == [10, 10]


def test_kernel_impl_is_chosen_at_build_time(monkeypatch):
    assert build_model("lvg-tiny").kernel_impl == "reference"  # CPU: auto -> reference
    monkeypatch.setenv("LVG_KERNEL_IMPL", "reference")
    assert build_model("lvg-tiny", impl="auto").kernel_impl == "reference"
    with pytest.raises(ValueError):
        build_model("lvg-tiny", impl="cuda-magic")


def test_config_is_attached_and_frozen():
    model = build_model("lvg-tiny")
    assert model.cfg == get_config("lvg-tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.cfg.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("variant", ["lvg-tiny", "lvg-tiny-xy", "lvg-tiny-xy-stem", "lvg-tiny-xy-stem-fine"])
def test_folded_prediction_equals_the_unfolded_feature_map(variant):
    # The decoder folds its last deconv + projection into the class embeddings; check against F^V . e_j.
    torch.manual_seed(5)
    model = build_model(variant).eval()
    dec = model.pixel_decoder
    b, n, d = 2, model.cfg.encoder.num_patches, model.cfg.encoder.embed_dim
    levels = [torch.randn(b, n, d) for _ in model.cfg.head.pyramid_layers]
    emb = torch.randn(b, 3, model.cfg.head.embed_dim)
    with torch.no_grad():
        for m in dec.modules():  # non-trivial biases, so the folded bias terms are exercised
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and m.bias is not None:
                m.bias.normal_()
        if dec.positions is not None:  # and position features that are not zero
            dec.positions.weight.normal_()
        image = torch.randn(b, 3, 480, 480)
        if dec.stem_proj is not None:  # and pixel features that are not zero
            dec.stem_proj.weight.normal_()
        fmap = dec.feature_map(levels, image)  # (B, E, s, s): 120 at map stride 4, 240 at 2
        expected = torch.einsum("behw,bje->bjhw", fmap.double(), emb.double())
        got = dec(levels, emb, image)
    side = model.cfg.prob_size
    assert got.shape == (b, 3, side, side) and side == {4: 120, 2: 240}[model.cfg.head.map_stride]
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)


def test_pixel_positions_add_a_map_of_position_alone():
    """lvg-tiny-xy with lvg-tiny's weights: its position features add to an expression's logits a map that
    depends on where a pixel is, not on the image's features."""
    torch.manual_seed(3)
    plain = build_model("lvg-tiny").eval()
    xy = build_model("lvg-tiny-xy").eval()
    missing, unexpected = xy.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["pixel_decoder.positions.weight", "pixel_decoder.positions.bias"] and not unexpected
    # Not zero at the start: from zero the position term would sit at a saddle (see PixelDecoder).
    assert xy.pixel_decoder.positions.weight.abs().max() > 0.05
    n, d = plain.cfg.encoder.num_patches, plain.cfg.encoder.embed_dim
    levels = [torch.randn(2, n, d) for _ in plain.cfg.head.pyramid_layers]  # two images' features
    emb = torch.randn(1, 3, plain.cfg.head.embed_dim).expand(2, 3, -1)  # the same expressions for both
    with torch.no_grad():
        added = xy.pixel_decoder(levels, emb) - plain.pixel_decoder(levels, emb)  # (2, 3, 120, 120)
    torch.testing.assert_close(added[0], added[1], rtol=0, atol=1e-4)  # the same map for both images
    assert (added[0, 0, :, :60].mean() - added[0, 0, :, 60:].mean()).abs() > 1e-2  # left differs from right


def test_position_table_runs_from_left_to_right_and_top_to_bottom():
    table = position_table(6)
    assert table.shape == (1, POSITION_CHANNELS, 6, 6)
    x, y = table[0, 0], table[0, 1]
    assert torch.all(x[:, 1:] > x[:, :-1]) and torch.all(y[1:] > y[:-1])
    assert x.min() > -1 and x.max() < 1 and torch.allclose(x, -x.flip(1))
    assert table.abs().max() <= 1


def _pooling_pair(seed: int = 0):
    """The same weights built twice: class tokens alone (the paper) and class + mean of tokens."""
    cfg = get_config("lvg-tiny")
    torch.manual_seed(seed)
    cls_model = build_model(cfg).eval()
    mean_model = build_model(cfg.replace(head=dataclasses.replace(cfg.head, class_pool="cls_mean"))).eval()
    mean_model.load_state_dict(cls_model.state_dict())
    return cls_model, mean_model


def test_cls_mean_adds_the_mean_of_each_expressions_own_tokens():
    cls_model, mean_model = _pooling_pair()
    cfg = mean_model.cfg
    image, ids, mask = make_inputs(cfg, batch=3, lengths=(4, 9, 16))
    seen = {}
    # The final text-stream layer norm's output holds every token the heads read from.
    hook = mean_model.beit3.encoder.layer_norm.B.register_forward_hook(lambda m, i, o: seen.update(xt=o))
    with torch.no_grad():
        out = mean_model(image, ids, mask)
    hook.remove()
    xt, L = seen["xt"], cfg.preprocess.max_text_len
    # Reference, written independently: loop over samples and expressions with plain slicing.
    want_t, want_z = [], []
    for b in range(3):
        words = [xt[b, j] for j in range(1, L) if mask[b, j]]
        want_t.append(mean_model.text_head(xt[b, 0] + torch.stack(words).mean(0)))
        start, row = L, []
        for k, head in zip(cfg.latent.lengths, mean_model.latent_heads):
            row.append(head(xt[b, start] + xt[b, start + 1: start + 2 + k].mean(0)))  # [z_cls, s, a_1..a_k]
            start += k + 2
        want_z.append(torch.stack(row))
    torch.testing.assert_close(out["text_embedding"], torch.stack(want_t).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["latent_embeddings"], torch.stack(want_z).detach(), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        plain = cls_model(image, ids, mask)
    assert not torch.allclose(plain["text_embedding"], out["text_embedding"], atol=1e-3)


def test_cls_mean_makes_the_untrained_text_embedding_depend_on_the_words():
    # Why the option exists: an untrained class token carries almost nothing of its sentence.
    cls_model, mean_model = _pooling_pair(seed=3)
    image, ids, mask = make_inputs(cls_model.cfg, batch=8, seed=5)
    image = image[:1].expand(8, -1, -1, -1)  # one image, eight different sentences

    def spread(model):
        with torch.no_grad():
            t = torch.nn.functional.normalize(model(image, ids, mask)["text_embedding"], dim=-1)
        return 1 - ((t @ t.T).sum() - 8) / 56  # 1 - mean off-diagonal cosine

    assert spread(mean_model) > 3 * spread(cls_model)


def test_from_scratch_initialisation_of_the_small_variants(tmp_path):
    from dataclasses import replace

    from lvg.modeling import load_weights, save_checkpoint
    from lvg.modeling.encoder import sincos_2d

    code = sincos_2d(64, 7)  # (49, 64)
    # A position's code is closest to itself: row/column are readable by a dot product.
    assert (code @ code.T).argmax(dim=1).tolist() == list(range(49))
    model = build_model("lvg-s")
    enc = model.cfg.encoder
    rows = model.beit3.encoder.embed_positions.A.weight[3:3 + enc.num_patches]
    assert torch.equal(rows, sincos_2d(enc.embed_dim, enc.grid))
    w = model.beit3.encoder.layers[0].self_attn.q_proj.A.weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.003 and float(w.abs().max()) <= 0.04 + 1e-6
    assert float(model.beit3.encoder.layers[0].ffn.A.fc1.bias.detach().abs().max()) == 0.0
    default = build_model("lvg-tiny").beit3.encoder.layers[0].self_attn.q_proj.A.weight.detach()
    assert float(default.std()) > 0.05  # PyTorch's own initialisation where init_std is 0
    # Initialisation settings are not architecture: weights of the same model made under other ones load.
    tiny = get_config("lvg-tiny")
    other = tiny.replace(encoder=replace(tiny.encoder, init_std=0.02, position_init="sincos"))
    path = save_checkpoint(build_model("lvg-tiny"), tmp_path / "t.safetensors")
    load_weights(build_model(other), path)
