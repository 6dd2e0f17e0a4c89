"""gancolor.data: files -> scan -> split -> uint8 batches -> (L, ab).

Everything runs on the CPU on small copies of the colour photos bundled with
scikit-image, written into tmp folders together with the kinds of broken and grayscale
files real photo folders contain.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

import skimage.data as skdata
from gancolor import color
from gancolor.data import (
    AlignedDataModule,
    AlignedDataset,
    ColorImageDataset,
    FolderDataModule,
    SampleDataModule,
    UnreadableImage,
    eval_transform,
    find_images,
    is_grayscale,
    lab_batch,
    load_rgb,
    scan_color_images,
    seeded_split,
    train_transform,
)
from gancolor.data.datamodule import SAMPLE_PHOTOS
from gancolor.errors import ConfigError, DataError

LOGGER = "gancolor.data"


def _half(rgb: np.ndarray) -> np.ndarray:
    """Halve the size: the tests need real photo content, not real photo sizes."""
    h, w = rgb.shape[:2]
    return np.array(Image.fromarray(rgb).resize((w // 2, h // 2), Image.Resampling.BOX))


def _save(array: np.ndarray, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def _mode(path: Path) -> str:
    with Image.open(path) as img:
        return img.mode


def _jpeg_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A messy folder: colour photos in nested folders with mixed-case extensions,
    plus corrupt, truncated, empty, grayscale, hidden and non-image files."""
    root = tmp_path_factory.mktemp("photos")
    colour = [
        _save(_half(skdata.astronaut()), root / "people" / "astronaut.JPG", quality=90),
        _save(_half(skdata.chelsea()), root / "animals" / "cats" / "chelsea.Png"),
        _save(_half(skdata.coffee()), root / "coffee.jpeg", quality=85),
        _save(_half(skdata.rocket()), root / "outdoor" / "rocket.JPEG", quality=90),
        _save(_half(skdata.stereo_motorcycle()[0]), root / "outdoor" / "street" / "motorcycle.png"),
        _save(_half(skdata.immunohistochemistry()), root / "lab" / "ihc.WebP", quality=90),
    ]
    rng = np.random.default_rng(0)
    corrupt = root / "broken" / "noise.jpg"
    corrupt.parent.mkdir()
    corrupt.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    truncated = root / "broken" / "cut_off.jpg"
    data = _jpeg_bytes(_half(skdata.astronaut()))
    truncated.write_bytes(data[: len(data) * 2 // 3])
    empty = root / "empty.png"
    empty.touch()
    camera = _half(skdata.camera())
    gray_rgb = _save(np.repeat(camera[:, :, None], 3, axis=2), root / "bw" / "camera_rgb.jpg", quality=80)
    gray_l = _save(_half(skdata.coins()), root / "bw" / "coins_l.png")
    # Never picked up: hidden file, hidden folder, not an image.
    _save(_half(skdata.coffee()), root / ".hidden.jpg")
    _save(_half(skdata.coffee()), root / ".thumbnails" / "coffee.jpg")
    (root / "notes.txt").write_text("not an image")
    return {
        "root": root,
        "colour": sorted(colour),
        "unreadable": [corrupt, truncated, empty],
        "grayscale": [gray_rgb, gray_l],
    }


# -- finding and decoding files ------------------------------------------------------


def test_find_images_recursive_sorted_case_insensitive_skips_hidden(photo_folder):
    found = find_images(photo_folder["root"])
    expected = photo_folder["colour"] + photo_folder["unreadable"] + photo_folder["grayscale"]
    assert sorted(found) == sorted(expected)
    assert found == sorted(found, key=lambda p: p.as_posix())
    assert not any(part.startswith(".") for p in found for part in p.relative_to(photo_folder["root"]).parts)


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "empty"])
def test_load_rgb_rejects_broken_files_naming_them(photo_folder, kind):
    path = dict(zip(["corrupt", "truncated", "empty"], photo_folder["unreadable"]))[kind]
    with pytest.raises(UnreadableImage) as info:
        load_rgb(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(UnreadableImage):
        load_rgb(path, max_side=64)  # the scan's fast path must catch them too


def test_truncated_images_are_not_tolerated_globally():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_exif_orientation_is_applied(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": stored landscape, shown portrait
    path = tmp_path / "phone.jpg"
    Image.fromarray(wide).save(path, quality=95, exif=exif.tobytes())
    assert load_rgb(path).shape == (40, 20, 3)


def test_unusual_modes_load_as_uint8_rgb(tmp_path):
    sixteen = np.array([[0, 65535], [32896, 257 * 10]], dtype=np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "deep.png")
    assert _mode(tmp_path / "deep.png").startswith("I")
    deep = load_rgb(tmp_path / "deep.png")
    assert deep.dtype == np.uint8 and deep.shape == (2, 2, 3)
    np.testing.assert_array_equal(deep[..., 0], [[0, 255], [128, 10]])
    assert (deep == deep[..., :1]).all()

    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "print.jpg", quality=95)
    assert _mode(tmp_path / "print.jpg") == "CMYK"
    red = load_rgb(tmp_path / "print.jpg")
    assert red.dtype == np.uint8 and red.shape == (8, 8, 3)
    assert np.abs(red.astype(int) - [255, 0, 0]).max() <= 3

    palette = Image.fromarray(_half(skdata.astronaut())).quantize(colors=32)
    palette.save(tmp_path / "palette.png")
    loaded = load_rgb(tmp_path / "palette.png")
    np.testing.assert_array_equal(loaded, np.asarray(palette.convert("RGB")))

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 1] = 200
    Image.fromarray(rgba).save(tmp_path / "alpha.png")  # fully transparent, green underneath
    np.testing.assert_array_equal(load_rgb(tmp_path / "alpha.png")[0, 0], [0, 200, 0])

    Image.new("1", (5, 3), 1).save(tmp_path / "bits.png")
    assert (load_rgb(tmp_path / "bits.png") == 255).all()


def test_is_grayscale_ignores_jpeg_and_sensor_noise():
    camera = np.repeat(skdata.camera()[:, :, None], 3, axis=2)
    noisy = np.clip(camera + np.random.default_rng(0).normal(0, 4, camera.shape), 0, 255).astype(np.uint8)
    assert is_grayscale(camera) and is_grayscale(noisy) and is_grayscale(skdata.camera())
    for photo in (skdata.astronaut(), skdata.hubble_deep_field(), skdata.immunohistochemistry()):
        assert not is_grayscale(photo)


# -- scanning ---------------------------------------------------------------------------


def test_scan_keeps_exactly_the_colour_files(photo_folder):
    result = scan_color_images(find_images(photo_folder["root"]), num_workers=4)
    assert sorted(result.good) == photo_folder["colour"]
    assert sorted(result.grayscale) == sorted(photo_folder["grayscale"])
    assert sorted(p for p, _ in result.unreadable) == sorted(photo_folder["unreadable"])
    assert all(reason for _, reason in result.unreadable)
    assert result.summary() == "6 colour images; 5 files skipped: 2 grayscale, 3 unreadable"


def test_folder_data_logs_each_bad_file_and_the_counts(photo_folder, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    data = FolderDataModule(photo_folder["root"], image_size=32, num_workers=0)
    data.setup()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for bad in photo_folder["unreadable"]:
        assert sum(str(bad) in w for w in warnings) == 1, bad
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("6 colour images; 5 files skipped: 2 grayscale, 3 unreadable" in m for m in infos)
    assert data.train_size + data.val_size == 6


# -- splitting ------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_complete(photo_folder):
    colour = {str(p) for p in photo_folder["colour"]}
    first = FolderDataModule(photo_folder["root"], val_fraction=0.34, seed=3, num_workers=0)
    again = FolderDataModule(photo_folder["root"], val_fraction=0.34, seed=3, num_workers=0)
    train, val = set(first.train_paths), set(first.val_paths)
    assert train.isdisjoint(val)
    assert train | val == colour
    assert len(val) == 2
    assert (first.train_paths, first.val_paths) == (again.train_paths, again.val_paths)

    paths = photo_folder["colour"]
    shuffled = [paths[i] for i in np.random.default_rng(1).permutation(len(paths))]
    assert seeded_split(shuffled, 0.34, 3) == seeded_split(paths, 0.34, 3)
    assert len({tuple(seeded_split(paths, 0.34, s)[1]) for s in range(8)}) > 1


def test_max_images_caps_a_seeded_subset(photo_folder):
    capped = FolderDataModule(photo_folder["root"], max_images=4, val_fraction=0.25, seed=1, num_workers=0)
    again = FolderDataModule(photo_folder["root"], max_images=4, val_fraction=0.25, seed=1, num_workers=0)
    assert capped.train_size + capped.val_size <= 4
    assert (capped.train_paths, capped.val_paths) == (again.train_paths, again.val_paths)


def test_hidden_root_and_explicit_files_are_found(tmp_path):
    inside_hidden = _save(_half(skdata.coffee()), tmp_path / ".cache" / "sample" / "coffee.png")
    assert find_images(tmp_path / ".cache" / "sample") == [inside_hidden]
    assert find_images(inside_hidden) == [inside_hidden]
    assert find_images(tmp_path) == []


def test_split_keeps_one_validation_image(tmp_path):
    two = [tmp_path / "a.png", tmp_path / "b.png"]
    train, val = seeded_split(two, 0.01, 0)
    assert len(train) == 1 and len(val) == 1
    assert seeded_split(two[:1], 0.5, 0) == (two[:1], [])


def test_train_val_subfolders_are_used_as_the_split(tmp_path):
    _save(_half(skdata.astronaut()), tmp_path / "train" / "a.png")
    _save(_half(skdata.coffee()), tmp_path / "train" / "b.jpg")
    _save(_half(skdata.chelsea()), tmp_path / "val" / "c.png")
    data = FolderDataModule(tmp_path, image_size=32, num_workers=0)
    assert [Path(p).name for p in data.train_paths] == ["a.png", "b.jpg"]
    assert [Path(p).name for p in data.val_paths] == ["c.png"]


# -- loading batches --------------------------------------------------------------------


def test_train_batch_is_uint8_rgb_and_converts_to_lab(photo_folder):
    data = FolderDataModule(photo_folder["root"], image_size=48, batch_size=2, num_workers=0, val_fraction=0.2)
    batch = next(iter(data.train_loader()))
    assert batch["rgb"].dtype == torch.uint8 and batch["rgb"].shape == (2, 3, 48, 48)
    assert len(batch["path"]) == 2 and all(isinstance(p, str) for p in batch["path"])
    L, ab = lab_batch(batch, "cpu")
    assert L.shape == (2, 1, 48, 48) and ab.shape == (2, 2, 48, 48)
    assert L.dtype == ab.dtype == torch.float32
    assert L.min() >= -1 and L.max() <= 1 and ab.abs().max() <= 1
    assert ab.abs().max() > 0.05  # these are colour photos

    val = list(data.val_loader())
    assert sum(len(b["path"]) for b in val) == data.val_size
    assert all(b["rgb"].shape[1:] == (3, 48, 48) for b in val)


def _first_batches(loader: torch.utils.data.DataLoader, n: int) -> list[torch.Tensor]:
    out = []
    for i, batch in enumerate(loader):
        if i == n:
            break
        out.append(batch["rgb"].clone())
    return out


def _data(photo_folder: dict[str, object], num_workers: int, seed: int = 0) -> FolderDataModule:
    return FolderDataModule(
        photo_folder["root"], image_size=32, batch_size=2, num_workers=num_workers, val_fraction=0.2, seed=seed
    )


def test_augmentation_is_reproducible_for_a_seed(photo_folder):
    # Separate objects: albumentations seeds each pipeline from OS entropy when it is
    # built, so only the sampler's per-sample seeds can make the two agree.
    one = _first_batches(_data(photo_folder, 0, seed=7).train_loader(), 2)
    two = _first_batches(_data(photo_folder, 0, seed=7).train_loader(), 2)
    other = _first_batches(_data(photo_folder, 0, seed=8).train_loader(), 2)
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    assert not all(torch.equal(a, b) for a, b in zip(one, other))


def test_epochs_differ_and_an_epoch_can_be_entered_mid_way(photo_folder):
    loader = _data(photo_folder, 0, seed=7).train_loader()
    loader.sampler.set_epoch(3)
    epoch3 = _first_batches(loader, 2)
    loader.sampler.set_epoch(4)
    assert not torch.equal(_first_batches(loader, 1)[0], epoch3[0])
    fresh = _data(photo_folder, 0, seed=7).train_loader()
    fresh.sampler.set_epoch(3, start=2)  # skip one batch of two: what a resume does
    assert torch.equal(_first_batches(fresh, 1)[0], epoch3[1])


def test_batches_do_not_depend_on_the_number_of_workers(photo_folder):
    one = _first_batches(_data(photo_folder, 2, seed=7).train_loader(), 2)
    two = _first_batches(_data(photo_folder, 2, seed=7).train_loader(), 2)
    in_process = _first_batches(_data(photo_folder, 0, seed=7).train_loader(), 2)
    assert len(one) == 2
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    # Every sample carries its own augmentation seed, so which worker loads it does not matter.
    assert all(torch.equal(a, b) for a, b in zip(one, in_process))


def test_file_deleted_after_scan_is_skipped_with_a_warning(tmp_path, caplog):
    for name in ("astronaut", "coffee", "chelsea"):
        _save(_half(getattr(skdata, name)()), tmp_path / f"{name}.jpg", quality=90)
    data = FolderDataModule(tmp_path, image_size=32, batch_size=1, num_workers=0, val_fraction=0.0, max_unreadable_share=0.5)
    assert data.train_size == 3
    gone = data.train_paths[1]
    os.remove(gone)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    paths = [p for batch in data.train_loader() for p in batch["path"]]
    assert len(paths) == 3 and gone not in paths
    assert any(gone in r.getMessage() for r in caplog.records)

    for path in data.train_paths:
        Path(path).unlink(missing_ok=True)
    with pytest.raises(DataError):
        ColorImageDataset(data.train_paths, None)[0]


def _vanishing_folder(tmp_path: Path, photos: int = 12) -> Path:
    for i in range(photos):
        _save(np.roll(_half(skdata.astronaut()), 25 * i, axis=1)[:96, :96], tmp_path / f"p{i:02d}.png")
    return tmp_path


def _break(paths: list[str]) -> list[str]:
    """Delete the first of `paths`, truncate the second, replace the third by text."""
    Path(paths[0]).unlink()
    data = Path(paths[1]).read_bytes()
    Path(paths[1]).write_bytes(data[: len(data) // 3])
    Path(paths[2]).write_text("replaced mid-run")
    return paths[:3]


@pytest.mark.parametrize("workers", [0, 2])
def test_images_that_break_mid_run_are_named_once_counted_and_batches_stay_full(tmp_path, workers):
    data = FolderDataModule(_vanishing_folder(tmp_path / "photos"), image_size=32, batch_size=3, num_workers=workers,
                            val_fraction=0.0, max_unreadable_share=0.3)
    assert data.train_size == 12
    broken = _break(data.train_paths)
    # A file handler: DataLoader workers inherit it, where pytest's capture cannot follow.
    log_file = tmp_path / "train.log"
    handler = logging.FileHandler(log_file)
    logging.getLogger(LOGGER).addHandler(handler)
    try:
        loader = data.train_loader()
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            batches = [batch["path"] for batch in loader]
            assert [len(b) for b in batches] == [3] * 4  # each batch filled from the remaining images
            assert not set(broken) & {p for b in batches for p in b}
    finally:
        logging.getLogger(LOGGER).removeHandler(handler)
        handler.close()
    lines = log_file.read_text().splitlines()
    for path in broken:
        assert sum(path in line for line in lines) == 1, (path, lines)  # named once, whichever worker met it
    assert sum("3 of 12 images skipped so far" in line for line in lines) == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_too_many_images_breaking_mid_run_stops_with_one_line(tmp_path, workers):
    data = FolderDataModule(_vanishing_folder(tmp_path / "photos"), image_size=32, batch_size=3, num_workers=workers,
                            val_fraction=0.0, max_unreadable_share=0.2)
    _break(data.train_paths)
    with pytest.raises(DataError) as info:
        for _ in data.train_loader():
            pass
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert message.startswith("3 of 12 images became unreadable after the scan") and "data.max_unreadable_share=0.2" in message


def test_max_unreadable_share_is_checked():
    with pytest.raises(ConfigError, match="data.max_unreadable_share: must be in \\[0, 1\\], got 1.5"):
        FolderDataModule("anywhere", max_unreadable_share=1.5)


# -- user errors --------------------------------------------------------------------


def test_missing_folder_is_a_one_line_data_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as info:
        FolderDataModule(missing).setup()
    message = str(info.value)
    assert message == f"data.root: folder not found: {missing.absolute()}"


def test_empty_folder_is_a_one_line_data_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DataError) as info:
        FolderDataModule(tmp_path).train_size
    message = str(info.value)
    assert "\n" not in message and str(tmp_path.absolute()) in message and "no images" in message


def test_folder_of_only_unusable_files_says_so(tmp_path):
    _save(skdata.camera(), tmp_path / "gray.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(DataError) as info:
        FolderDataModule(tmp_path).setup()
    message = str(info.value)
    assert "\n" not in message and "2 files skipped: 1 grayscale, 1 unreadable" in message and str(tmp_path) in message


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _save(_half(skdata.astronaut()), tmp_path / "pics" / "a.png")
    _save(_half(skdata.coffee()), tmp_path / "pics" / "b.png")
    data = FolderDataModule("~/pics", image_size=32, num_workers=0)
    assert data.train_size + data.val_size == 2


# -- bundled sample photos ------------------------------------------------------------


def test_sample_data_materialises_into_gancolor_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANCOLOR_CACHE", str(tmp_path))
    data = SampleDataModule(image_size=32, batch_size=2)
    batch = next(iter(data.train_loader()))
    assert batch["rgb"].shape == (2, 3, 32, 32) and batch["rgb"].dtype == torch.uint8
    written = sorted((tmp_path / "sample").iterdir())
    assert [p.name for p in written] == sorted(f"{name}.png" for name in SAMPLE_PHOTOS)
    assert len(written) >= 6
    assert data.train_size + data.val_size == len(SAMPLE_PHOTOS)  # all are colour photos

    stamps = {p: p.stat().st_mtime_ns for p in written}
    assert SampleDataModule(image_size=32).train_size == data.train_size
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # written once


# -- aligned pairs -----------------------------------------------------------------------


def _gray_twin(rgb: np.ndarray) -> np.ndarray:
    """The neutral image with the same Lab lightness: what an A half should be."""
    chw = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    L = color.rgb_to_lightness(color.uint8_to_float(chw))
    return color.float_to_uint8(color.gray_to_rgb(L))[0].permute(1, 2, 0).numpy()


def _write_pairs(root: Path, val_name: str, gray_left: bool) -> None:
    photos = {"astronaut": skdata.astronaut(), "coffee": skdata.coffee(), "rocket": skdata.rocket()}
    for split, names in (("train", ["astronaut", "coffee"]), (val_name, ["rocket"])):
        for name in names:
            colour = _half(photos[name])
            gray = _gray_twin(colour)
            pair = np.concatenate([gray, colour] if gray_left else [colour, gray], axis=1)
            _save(pair, root / split / f"{name}.png")


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_aligned_pairs_share_crop_and_flip(tmp_path, direction):
    _write_pairs(tmp_path, "test", gray_left=direction == "AtoB")
    data = AlignedDataModule(tmp_path, direction=direction, image_size=48, batch_size=2, num_workers=0, scale_min=0.2)
    assert (data.train_size, data.val_size) == (2, 1)
    loader = data.train_loader()
    for epoch in range(4):
        loader.sampler.set_epoch(epoch)
        batch = next(iter(loader))
        assert batch["rgb"].shape == batch["input_rgb"].shape == (2, 3, 48, 48)
        assert batch["input_rgb"].dtype == torch.uint8
        L_target, ab = color.batch_to_lab(batch["rgb"])
        L_input, ab_input = color.batch_to_lab(batch["input_rgb"])
        assert ab.abs().amax() > 0.05 > ab_input.abs().amax()  # target colour, input neutral
        diff = (L_target - L_input).abs()
        # Resampling gray and colour pixels differs by rounding only; a different crop
        # or flip would differ by tenths.
        assert diff.mean() < 0.01 and diff.max() < 0.1, (epoch, float(diff.mean()), float(diff.max()))
        L, lab_ab = lab_batch(batch)
        assert torch.equal(L, L_input) and torch.equal(lab_ab, ab)
    val = next(iter(data.val_loader()))
    assert set(val) == {"rgb", "input_rgb", "path"}


def test_aligned_warns_once_when_given_ordinary_photos(tmp_path, caplog):
    # Landscape photos read as A|B have portrait halves; pix2pix's A|B files have square ones.
    for name in ("coffee", "rocket", "chelsea"):
        _save(_half(getattr(skdata, name)()), tmp_path / "photos" / f"{name}.png")
    square = _half(skdata.astronaut())
    _save(np.concatenate([_gray_twin(square), square], axis=1), tmp_path / "pairs" / "astronaut.png")
    with caplog.at_level(logging.WARNING, logger="gancolor.data"):
        AlignedDataModule(tmp_path / "photos", image_size=32, num_workers=0, val_fraction=0).setup()
    warnings = [r.getMessage() for r in caplog.records if "side by side" in r.getMessage()]
    assert len(warnings) == 1 and "3 of 3 files" in warnings[0] and "use data=folder" in warnings[0], warnings
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gancolor.data"):
        AlignedDataModule(tmp_path / "pairs", image_size=32, num_workers=0, val_fraction=0).setup()
    assert not [r for r in caplog.records if "side by side" in r.getMessage()]


def test_aligned_dataset_rejects_unknown_direction():
    with pytest.raises(ConfigError, match="^data.direction: .*'sideways'$"):
        AlignedDataset([], None, direction="sideways")


def test_transforms_produce_requested_size():
    image = _half(skdata.rocket())
    assert train_transform(40)(image=image)["image"].shape == (40, 40, 3)
    assert eval_transform(40)(image=image)["image"].shape == (40, 40, 3)
    pair = train_transform(40, paired=True)(image=image, input_rgb=image.copy())
    np.testing.assert_array_equal(pair["image"], pair["input_rgb"])



# -- names ------------------------------------------------------------------------------

# Every `_target_` a data node could hold before the *DataModule names, as checkpoints and
# run configs of that time store them, with the class it must build today.
OLD_TARGETS = {
    "gancolor.data.FolderData": "FolderDataModule",
    "gancolor.data.SampleData": "SampleDataModule",
    "gancolor.data.AlignedData": "AlignedDataModule",
    "gancolor.data.UnpairedData": "UnpairedDataModule",
    "gancolor.data.DomainsData": "DomainsDataModule",
    "gancolor.data.datamodule.FolderData": "FolderDataModule",
    "gancolor.data.datamodule.SampleData": "SampleDataModule",
    "gancolor.data.unpaired.UnpairedData": "UnpairedDataModule",
    "gancolor.data.domains.DomainsData": "DomainsDataModule",
}


@pytest.mark.parametrize("target", sorted(OLD_TARGETS))
def test_old_data_targets_build_the_renamed_data_modules(target, tmp_path):
    from hydra.utils import instantiate

    import gancolor.data

    new_class = getattr(gancolor.data, OLD_TARGETS[target])
    options = {"cache_dir": str(tmp_path)} if new_class is SampleDataModule else {"root": str(tmp_path)}
    built = instantiate({"_target_": target, **options})
    assert type(built) is new_class


def test_old_dataset_paths_still_import():
    from gancolor.data.datamodule import SampleRootFallback
    from gancolor.data.datasets import DomainImageDataset, UnpairedDataset
    from gancolor.data.domains import DomainImageDataset as old_domain_dataset
    from gancolor.data.unpaired import SampleRootFallback as old_fallback
    from gancolor.data.unpaired import UnpairedDataset as old_unpaired_dataset

    assert old_domain_dataset is DomainImageDataset and old_unpaired_dataset is UnpairedDataset
    assert old_fallback is SampleRootFallback


def test_every_data_config_builds_a_data_module():
    # The rule of gancolor/data/__init__.py: what `data=` builds is a *DataModule.
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    configs = sorted((Path(__file__).resolve().parents[1] / "conf" / "data").glob("*.yaml"))
    assert configs
    for path in configs:
        target = OmegaConf.load(path)._target_
        cls = get_class(target)
        assert cls.__name__.endswith("DataModule") and issubclass(cls, FolderDataModule), (path.name, target)
        assert target == f"gancolor.data.{cls.__name__}", (path.name, target)


def _probe_stop_signals(path: str, worker_id: int) -> None:
    """worker_init_fn: what a new worker's stop signals are on entry and after init_worker."""
    import signal

    from gancolor.data.datamodule import init_worker

    on_entry = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    init_worker(worker_id)
    after = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    Path(path).write_text(json.dumps({
        "blocked_on_entry": sorted(int(s) for s in on_entry),
        "blocked_after": sorted(int(s) for s in after),
        "sigterm_ignored": signal.getsignal(signal.SIGTERM) == signal.SIG_IGN,
        "sigint_ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
    }))  # fmt: skip


def test_loader_workers_start_with_stop_signals_blocked_until_they_ignore_them(small_photo_folder, tmp_path):
    """A SIGTERM to the process group while a worker starts (torchrun's, a scheduler's) must
    not kill it: from its fork until init_worker it has SIGINT/SIGTERM blocked, then ignored."""
    import functools
    import signal

    data = FolderDataModule(small_photo_folder, image_size=16, batch_size=2, num_workers=1, val_fraction=0.0)
    loader = data.train_loader()
    report = tmp_path / "worker.json"
    loader.worker_init_fn = functools.partial(_probe_stop_signals, str(report))
    loader.sampler.set_epoch(0)
    mask_before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    next(iter(loader))
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask_before, "the training process's mask is restored"
    seen = json.loads(report.read_text())
    stop = sorted([int(signal.SIGINT), int(signal.SIGTERM)])
    assert set(stop) <= set(seen["blocked_on_entry"]), seen
    assert not set(stop) & set(seen["blocked_after"]), seen
    assert seen["sigterm_ignored"] and seen["sigint_ignored"], seen
