"""The timm-encoder Dynamic U-Net: sizes, encoder weights from files, freezing and
its own learning rate, and `python -m gancolor generator=dynamic_unet` end to end."""

import logging

import pytest
import torch

from gancolor.errors import CheckpointError, ConfigError
from gancolor.models.pix2pix import Pix2Pix
from gancolor.nets import DynamicUNet, PatchDiscriminator
from gancolor.nets import dynamic_unet as dynamic_unet_module
from gancolor.trainer import Trainer
from helpers import read_metrics as metrics
from helpers import same, snapshot
from warm import run_gancolor

SCRATCH = {"name": "resnet18", "weights": False, "lr_mult": 0.1}


def small(**kwargs) -> DynamicUNet:
    torch.manual_seed(0)
    kwargs.setdefault("encoder", SCRATCH)
    return DynamicUNet(decoder_width_mult=0.125, **kwargs)


def timm_resnet18_state() -> dict[str, torch.Tensor]:
    """A full resnet18 classifier's state dict, random but distinctive (seeded)."""
    import timm

    torch.manual_seed(123)
    return timm.create_model("resnet18", pretrained=False).state_dict()


# -- shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(33, 47), (17, 90), (64, 64), (5, 3)])
def test_output_size_equals_input_size(size):
    net = small().eval()
    with torch.no_grad():
        ab = net(torch.rand(2, 1, *size) * 2 - 1)
    assert ab.shape == (2, 2, *size)
    assert ab.abs().max() <= 1.0  # ab through tanh


def test_class_logits_are_raw_and_any_encoder_reduction_works():
    net = small(out_channels=261, encoder={"name": "convnext_atto", "weights": False}, input_stem="repeat")
    assert not net.tanh and net.encoder.feature_info.reduction()[0] == 4  # ConvNeXt starts at 1/4
    assert net(torch.randn(2, 1, 37, 29)).shape == (2, 261, 37, 29)


def test_self_attention_and_spectral_norm_build_and_run():
    net = small(self_attention=True, spectral_norm=True)
    assert any(type(m).__name__ == "SelfAttention" for m in net.modules())
    assert any("parametrizations" in name for name, _ in net.named_parameters())
    assert net(torch.randn(2, 1, 40, 40)).shape == (2, 2, 40, 40)


def test_the_stem_starts_as_imagenet_normalised_gray():
    net = small()
    white = net.stem(torch.ones(1, 1, 1, 1)).flatten()  # L = 1: white
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(white, expected, atol=1e-5)


def test_bad_encoder_settings_are_config_errors():
    with pytest.raises(ConfigError, match="unknown timm model 'resnet1'"):
        DynamicUNet(encoder={"name": "resnet1", "weights": False})
    with pytest.raises(ConfigError, match="unknown key"):
        DynamicUNet(encoder={"name": "resnet18", "weight": "x.pt"})


# -- weights -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["timm.pth", "ddp.pth", "wrapped.pt", "timm.safetensors"])
def test_encoder_weights_load_from_a_saved_state_dict(tmp_path, kind):
    state = timm_resnet18_state()
    path = tmp_path / f"resnet18_{kind}"
    if kind == "ddp.pth":  # saved from a DataParallel/DDP-wrapped model
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif kind == "wrapped.pt":
        torch.save({"state_dict": state, "epoch": 90}, path)
    elif kind.endswith("safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    net = small(encoder={"name": "resnet18", "weights": str(path)})
    loaded = net.encoder.state_dict()
    for key in ("conv1.weight", "layer4.1.conv2.weight", "layer2.0.downsample.1.running_var"):
        assert torch.equal(loaded[key], state[key]), key
    assert net.encoder_source == str(path)


def test_torchvision_resnet18_weights_load(tmp_path):
    import torchvision

    torch.manual_seed(7)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "resnet18-tv.pth")
    net = small(encoder={"name": "resnet18", "weights": str(tmp_path / "resnet18-tv.pth")})
    assert torch.equal(net.encoder.state_dict()["layer3.1.bn2.weight"], state["layer3.1.bn2.weight"])


def test_convnext_weights_map_onto_the_flattened_feature_wrapper(tmp_path):
    import timm

    torch.manual_seed(5)
    state = timm.create_model("convnext_atto", pretrained=False).state_dict()
    torch.save(state, tmp_path / "convnext.pth")
    net = small(encoder={"name": "convnext_atto", "weights": str(tmp_path / "convnext.pth")})
    assert torch.equal(net.encoder.state_dict()["stem_0.weight"], state["stem.0.weight"])


def test_weights_of_another_architecture_are_one_line_errors(tmp_path):
    import timm

    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(CheckpointError, match="does not fit the encoder: unexpected") as info:
        small(encoder={"name": "resnet18", "weights": str(tmp_path / "resnet34.pth")})
    assert "\n" not in str(info.value) and "layer1.2" in str(info.value)
    state = timm_resnet18_state()
    state["conv1.weight"] = state["conv1.weight"][:, :1]  # a 1-channel first conv
    torch.save(state, tmp_path / "gray.pth")
    with pytest.raises(CheckpointError, match=r"different shape \(1\): conv1.weight"):
        small(encoder={"name": "resnet18", "weights": str(tmp_path / "gray.pth")})


def test_missing_or_unreadable_weights_files(tmp_path):
    """Each a plain line prefixed with the key, with no text of the unpickler's own
    (KeyError(101) for "hello", IndexError for "abcdefgh")."""
    with pytest.raises(ConfigError, match="generator.encoder.weights: weights file not found"):
        small(encoder={"name": "resnet18", "weights": str(tmp_path / "nope.safetensors")})
    with pytest.raises(ConfigError) as info:
        small(encoder={"name": "resnet18", "weights": str(tmp_path)})
    assert str(info.value) == f"generator.encoder.weights: {tmp_path} is a folder: give the weights file in it (.safetensors, .pth, .pt)"
    for name, data in (("junk.pth", b"not a torch file"), ("hello.pt", b"hello"), ("abc.pt", b"abcdefgh"), ("h.safetensors", b"hello")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            small(encoder={"name": "resnet18", "weights": str(tmp_path / name)})
        assert str(info.value) == f"generator.encoder.weights: cannot read {tmp_path / name}: not a safetensors file or a torch state dict"


def test_a_gancolor_checkpoint_without_an_encoder_is_named_as_such(tmp_path):
    """A CycleGAN checkpoint (nets G_AB, G_BA, D_A, D_B and the image pools' non-tensor
    state) given as encoder weights: said to be a gancolor checkpoint with no
    generator.encoder weights, not 'does not hold a state dict'."""
    from helpers import compose, save_checkpoint, shrink

    from gancolor.build import build_recipe

    cfg = shrink(compose("model=cyclegan", "generator.ngf=8", "discriminator.ndf=8"))
    path = save_checkpoint(tmp_path / "last.pt", cfg, build_recipe(cfg))
    with pytest.raises(CheckpointError) as info:
        small(encoder={"name": "resnet18", "weights": str(path)})
    assert str(info.value) == (
        f"generator.encoder.weights: {path} is a gancolor checkpoint (model=cyclegan) with no generator.encoder weights; "
        "its nets: D_A, D_B, G_AB, G_BA (give one trained with generator=dynamic_unet, or the encoder's own weights file)"
    )


def test_no_weights_warns_once_then_trains_from_scratch(monkeypatch, caplog):
    monkeypatch.setattr(dynamic_unet_module, "cached_pretrained_file", lambda name: None)
    monkeypatch.setattr(dynamic_unet_module, "_warned_no_weights", set())
    with caplog.at_level(logging.WARNING, logger="gancolor.nets"):
        small(encoder={"name": "resnet18"})
        small(encoder={"name": "resnet18"})
        small(encoder={"name": "resnet18", "weights": False})  # random on purpose: no warning
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "no pretrained weights for resnet18: training the encoder from scratch (set generator.encoder.weights=PATH)"
    ]


def test_timm_local_cache_is_used_when_it_holds_the_weights(monkeypatch, tmp_path):
    state = timm_resnet18_state()
    torch.save(state, tmp_path / "cached.pth")
    monkeypatch.setattr(dynamic_unet_module, "cached_pretrained_file", lambda name: tmp_path / "cached.pth")
    net = small(encoder={"name": "resnet18"})
    assert torch.equal(net.encoder.state_dict()["conv1.weight"], state["conv1.weight"])


def test_cache_lookup_never_downloads(monkeypatch, tmp_path):
    from gancolor.nets.weights import cached_pretrained_file

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch" / "hub"))

    def no_network(*args, **kwargs):
        raise AssertionError("network call")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    # This machine's own Hugging Face cache may hold resnet18: look only where the test says.
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *args, **kwargs: None)
    assert cached_pretrained_file("resnet18") is None
    assert cached_pretrained_file("not_a_model") is None
    # A file where torch hub keeps downloads is found.
    target = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18_a1_0-d63eafa0.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert cached_pretrained_file("resnet18") == target


# -- freezing and learning rates -------------------------------------------------------------


def test_freeze_then_unfreeze_changes_which_parameters_train(photos):
    from gancolor.color import batch_to_lab

    recipe = Pix2Pix(
        generator=small(),
        discriminator=PatchDiscriminator(ndf=8),
        loss={"gan_mode": "vanilla", "lambda_L1": 100.0, "pretrain_loss": "mse"},
        lr=1e-3,
    )
    trainer = Trainer(device="cpu", progress_bar=False, freeze_epochs={"generator.encoder": 1})
    trainer.setup(recipe)
    lrs = [g["lr"] for g in trainer.optimizers["G"].param_groups]
    assert lrs == [pytest.approx(1e-3), pytest.approx(1e-4)]  # decoder, then encoder at lr * lr_mult
    crops = torch.stack([torch.from_numpy(p[100:132, 100:132]).permute(2, 0, 1) for p in photos])
    L, ab = batch_to_lab(crops, "cpu")
    batch = {"L": L, "ab": ab}

    generator = recipe.generator
    encoder_ids = {id(p) for p in generator.encoder.parameters()}
    decoder = [p for p in generator.parameters() if id(p) not in encoder_ids]
    trainer.apply_freeze_schedule(0)
    assert not any(p.requires_grad for p in generator.encoder.parameters())
    enc0, dec0 = snapshot(generator.encoder), [p.detach().clone() for p in decoder]
    trainer.train_iteration(recipe.pretrain_steps(), batch, 0)
    assert same(enc0, snapshot(generator.encoder))
    assert not same(dec0, decoder)

    trainer.apply_freeze_schedule(1)
    assert all(p.requires_grad for p in generator.encoder.parameters())
    trainer.train_iteration(recipe.pretrain_steps(), batch, 1)
    assert not same(enc0, snapshot(generator.encoder))


def test_param_groups_cover_every_parameter_once():
    net = small(encoder={"name": "resnet18", "weights": False, "lr_mult": 0.25})
    groups = net.param_groups(2e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    assert [g["lr"] for g in groups] == [pytest.approx(2e-4), pytest.approx(5e-5)]


# -- end to end ------------------------------------------------------------------------------

TINY = [
    "generator=dynamic_unet",
    "generator.decoder_width_mult=0.125",
    "discriminator.ndf=8",
    "data.image_size=32",
    "data.batch_size=2",
    "data.repeats=1",
    "trainer.log_every_n_steps=1",
    "trainer.num_samples=2",
    "trainer.progress_bar=false",
    "logger=none",
]


@pytest.mark.slow
def test_nogan_schedule_end_to_end(tmp_path, cache):
    # The preset's phases at a tiny scale: 1 generator epoch (encoder frozen), 1 critic
    # epoch, 1 adversarial epoch, one validation at the end; resnet18, not resnet34.
    # Also pix2pix with a Dynamic U-Net through the command line, checkpoint included.
    args = [
        "experiment=nogan",
        *TINY,
        "generator.encoder.name=resnet18",
        "trainer.max_epochs=3",
        "trainer.pretrain_epochs=1",
        "trainer.critic_pretrain_epochs=1",
        "trainer.val_every_n_epochs=3",
    ]
    result = run_gancolor(args, cwd=tmp_path, cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "runs" / "pix2pix").iterdir()
    rows = [r for r in metrics(run) if "phase" in r and any(k.startswith("train/") for k in r)]
    assert sorted({r["phase"] for r in rows}) == [0, 1, 2]
    critic = [r for r in rows if r["phase"] == 1]
    assert critic and all("train/D/loss" in r and "train/G/loss" not in r for r in critic)
    adversarial = [r for r in rows if r["phase"] == 2]
    assert adversarial[-1]["lr/D"] == pytest.approx(4 * adversarial[-1]["lr/G"])  # TTUR
    assert "no pretrained weights for resnet18" in (run / "train.log").read_text()
    every = metrics(run)
    assert any("train/G/pixel" in r for r in every) and any("train/G/gan" in r for r in every)
    assert len([r for r in every if "val/psnr" in r]) == 1

    from gancolor.checkpoint import load_recipe

    recipe, _ = load_recipe(run / "checkpoints" / "last.pt")
    assert type(recipe.generator).__name__ == "DynamicUNet"
    assert recipe.colorize(torch.zeros(1, 1, 30, 50)).shape == (1, 2, 30, 50)
