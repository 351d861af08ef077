"""Data specs -> images in the generator's shape and range."""

import numpy as np
import pytest
import torch
from PIL import Image

from hatrefine import HatrefineError
from hatrefine.data import DataStream, load_images, open_dataset


def test_embedded_mnist_splits_and_range():
    train = load_images("builtin:mnist", (1, 32, 32), split="train")
    test = load_images("builtin:mnist", (1, 32, 32), split="test")
    assert train.shape == (4500, 1, 32, 32) and test.shape == (500, 1, 32, 32)
    assert train.dtype == torch.float32 and train.min() >= -1 and train.max() <= 1
    assert train.min() == -1 and train.max() > 0.9  # black background, white strokes
    # held-out digits are not training digits
    assert not any(torch.equal(test[0], t) for t in train[:4500:7])


def test_embedded_mnist_converts_to_rgb_64():
    x = load_images("builtin:mnist", (3, 64, 64), split="test", limit=4)
    assert x.shape == (4, 3, 64, 64)
    assert torch.equal(x[:, 0], x[:, 1])


def test_npz_uint8_nhwc(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "imgs.npz", x=arr)
    x = load_images(str(tmp_path / "imgs.npz"), (3, 8, 8))
    assert x.shape == (5, 3, 8, 8)
    torch.testing.assert_close(x[0, :, 2, 3], torch.tensor(arr[0, 2, 3] / 127.5 - 1, dtype=torch.float32))


def test_an_npz_holds_out_every_tenth_image_for_calibration(tmp_path):
    arr = np.arange(30, dtype=np.float32)[:, None, None, None] / 15 - 1 + np.zeros((30, 1, 4, 4), np.float32)  # image i is the constant i / 15 - 1
    np.savez(tmp_path / "imgs.npz", x=arr)
    value = lambda split: sorted(round((v + 1) * 15) for v in load_images(str(tmp_path / "imgs.npz"), (1, 4, 4), split=split)[:, 0, 0, 0].tolist())
    assert value("test") == [9, 19, 29] and value("train") == [i for i in range(30) if i % 10 != 9]  # disjoint, and together the whole file


def test_npz_without_images_key(tmp_path):
    np.savez(tmp_path / "bad.npz", labels=np.zeros(3))
    with pytest.raises(HatrefineError, match=r"has arrays \['labels'\]; put the images under the key 'x'"):
        load_images(str(tmp_path / "bad.npz"), (1, 8, 8))


def test_image_folder(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((10, 12, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    x = load_images(str(tmp_path), (1, 16, 16))
    assert x.shape == (3, 1, 16, 16)
    torch.testing.assert_close(x[1].mean(), torch.tensor(40 / 127.5 - 1), atol=1e-3, rtol=0)


def test_empty_folder_and_unknown_spec(tmp_path):
    with pytest.raises(HatrefineError, match="holds no images"):
        load_images(str(tmp_path), (1, 8, 8))
    with pytest.raises(HatrefineError, match="unknown data spec 'imagenet-22k'; use builtin:mnist"):
        open_dataset("imagenet-22k", (1, 8, 8))


def test_torchvision_dataset_offline_error(tmp_path):
    with pytest.raises(HatrefineError, match="could not be downloaded.*--data-root"):
        open_dataset("cifar10", (3, 32, 32), root=tmp_path, download=False)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"half a download")
    with pytest.raises(HatrefineError, match="is corrupted or incomplete .*checksum.*delete"):
        open_dataset("cifar10", (3, 32, 32), root=tmp_path, download=False)


def test_stream_batches_depend_only_on_seed_and_step():
    ds = open_dataset("builtin:mnist", (1, 32, 32), split="test")
    a, b = DataStream(ds, 64, seed=3), DataStream(ds, 64, seed=3)
    first = [a.batch(k) for k in range(10)]
    assert torch.equal(b.batch(9), first[9])  # random access: no need to replay earlier batches
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(DataStream(ds, 64, seed=4).batch(0), first[0])
    seen = torch.cat(first[: a.per_epoch])  # one epoch visits distinct images
    assert len({tuple(v.flatten().tolist()) for v in seen}) == len(seen)


def test_photos_of_another_aspect_are_centre_cropped_as_the_authors_do_not_squashed():
    from hatrefine.data import fit_to_shape

    photo = torch.full((1, 3, 218, 178), -1.0)  # CelebA's 178 x 218 (W x H)
    photo[:, :, :20] = 1.0  # bands at the top and bottom that the centre 178 x 178 leaves out
    photo[:, :, -20:] = 1.0
    out = fit_to_shape(photo, (3, 64, 64))
    assert out.shape == (1, 3, 64, 64)
    assert out.max() < -0.99  # squashing would have kept the bands in the top and bottom rows
    wide = fit_to_shape(photo.transpose(2, 3), (3, 64, 64))
    assert wide.max() < -0.99


def test_a_folder_over_the_memory_cap_is_streamed_and_random_crops_are_fixed_by_epoch(tmp_path, monkeypatch):
    from PIL import Image

    from hatrefine.data import DataStream, ImageFolder, open_dataset

    rng = np.random.default_rng(0)
    for k in range(30):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / f"{k:02d}.png")
    assert isinstance(open_dataset(str(tmp_path), (3, 16, 16)), torch.utils.data.TensorDataset)  # small: in memory
    monkeypatch.setenv("HATREFINE_DATA_MEMORY_MB", "0.01")  # 10 KB: less than the 27 training images (83 KB as float32)
    ds = open_dataset(str(tmp_path), (3, 16, 16))
    assert isinstance(ds, ImageFolder) and len(ds) == 27 and len(open_dataset(str(tmp_path), (3, 16, 16), split="test")) == 3
    torch.testing.assert_close(ds[0][0], open_dataset(str(tmp_path), (3, 16, 16))[0][0])  # read again from disk, the same image
    crops = open_dataset(str(tmp_path), (3, 16, 16), crop="random")
    stream, again = DataStream(crops, 8, seed=1), DataStream(open_dataset(str(tmp_path), (3, 16, 16), crop="random"), 8, seed=1)
    first, later = stream.batch(0), stream.batch(stream.per_epoch)  # epoch 0 and epoch 1
    assert first.shape == (8, 3, 16, 16)
    torch.testing.assert_close(again.batch(stream.per_epoch), later)  # a resumed run sees the same crops
    crops.set_epoch(0)
    a = crops[3][0]
    crops.set_epoch(1)
    assert not torch.equal(a, crops[3][0])  # another window of the same image
