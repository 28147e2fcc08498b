"""The data pipeline: sources, §2 preprocessing, the cache, statistics, batches.

Everything is generated in tmp_path (tiny images, a few per class): no network.
"""

import os
import shutil
import socket
import subprocess
import sys
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import reproduce.data as data
from reproduce.config import DataConfig, data_identity
from reproduce.data import DataError, cache, decode
from reproduce.data.pixelstats import compute_stats
from reproduce.files import host_tag

# Code that runs no Keras model differently per backend: `make test` runs it once.
pytestmark = pytest.mark.one_backend

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("apple", "bee", "cat")
FORMATS = (("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"))


def _img(rng, h, w, mode="RGB"):
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(a)
    return im.convert(mode) if mode != "RGB" else im


def make_tree(base: Path, splits=("train", "val"), per_class=3, classes=CLASSES, corrupt=True, top="mydata") -> Path:
    """<base>/<top>/<split>/<class>/<i>.<jpg|png|webp>, mixed sizes and modes."""
    rng = np.random.default_rng(0)
    root = base / top if top else base
    for split in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                ext, fmt = FORMATS[i % 3]
                h, w = [(10, 14), (16, 9), (8, 8)][i % 3]
                mode = ["RGB", "L", "RGBA"][i % 3] if fmt == "PNG" else "RGB"
                _img(rng, h, w, mode).save(d / f"{i:02d}.{ext}", format=fmt)
            (d / "notes.txt").write_text("not an image")
    if corrupt:
        (root / "train" / classes[0] / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / ".DS_Store").write_bytes(b"\0")
    return base


def make_archive(folder: Path, out: Path) -> Path:
    name = out.name
    if name.endswith(".zip"):
        with zipfile.ZipFile(out, "w") as z:
            for p in sorted(folder.rglob("*")):
                z.write(p, p.relative_to(folder).as_posix())
    else:
        mode = {"tar": "w", "gz": "w:gz", "xz": "w:xz"}[name.rsplit(".", 1)[-1]]
        with tarfile.open(out, mode) as t:
            for p in sorted(folder.iterdir()):
                t.add(p, arcname=p.name)
    return out


def cfg(source, tmp_path, **kw):
    kw.setdefault("image_size", 8)
    kw.setdefault("crop_size", 6)
    return DataConfig(source=str(source), cache_dir=str(tmp_path / "cache"), **kw)


@pytest.fixture
def tolerant(monkeypatch):
    # One corrupt file among 10 is 10%; the default limit (1%) is tested separately.
    monkeypatch.setenv("REPRODUCE_MAX_BAD_FRACTION", "0.2")


# --------------------------------------------------------------------------------------
# Folders and archives
# --------------------------------------------------------------------------------------


def test_folder_all_formats_fallback_split_and_corrupt_file(tmp_path, tolerant):
    src = make_tree(tmp_path / "src")
    with pytest.warns(UserWarning) as rec:
        d = data.load(cfg(src, tmp_path))  # val_split "validation" -> the "val" folder
    msgs = "\n".join(str(w.message) for w in rec)
    assert "zz_broken.jpg" in msgs and "skipping 1 unreadable" in msgs
    assert "'validation' not found" in msgs and "using 'val'" in msgs
    assert d.train.split == "train" and d.val.split == "val"
    assert d.class_names == list(CLASSES) and d.num_classes == 3
    assert d.train.images.shape == (9, 8, 8, 3) and d.train.images.dtype == np.uint8
    assert isinstance(d.train.images, np.memmap)
    assert d.val.images.shape == (9, 8, 8, 3)
    assert d.train.labels.dtype == np.int32
    np.testing.assert_array_equal(d.train.labels, np.repeat([0, 1, 2], 3))
    m = cache.read_manifest(d.train.cache_path)
    assert m["skipped"][0][0].endswith("apple/zz_broken.jpg") and m["n"] == 9
    assert d.stats.mean_image.shape == (8, 8, 3) and d.stats.mean_image.dtype == np.float32


def test_preprocessing_is_shorter_side_to_S_then_centre_crop(tmp_path):
    # §2: exact when no resampling is needed (shorter side already S) ...
    rng = np.random.default_rng(1)
    wide = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    tall = rng.integers(0, 256, (12, 8, 3), dtype=np.uint8)
    # ... and a smooth 2x larger image: resampling to S gives the 2x2 block means.
    yy, xx = np.meshgrid(np.arange(16), np.arange(24), indexing="ij")
    big = np.stack([yy * 8, xx * 5, yy * 4 + xx * 2], -1).astype(np.uint8)
    src = tmp_path / "src"
    for split in ("train", "val"):
        d = src / split / "only"
        d.mkdir(parents=True)
        Image.fromarray(wide).save(d / "a.png")
        Image.fromarray(tall).save(d / "b.png")
        Image.fromarray(big).save(d / "c.png")
    arr = data.load_split(cfg(src, tmp_path), "train")
    np.testing.assert_array_equal(arr.images[0], wide[:, 2:10])
    np.testing.assert_array_equal(arr.images[1], tall[2:10])
    centre = big[:, 4:20].astype(float)
    blocks = centre.reshape(8, 2, 8, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(arr.images[2], blocks, atol=2.5)


@pytest.mark.parametrize("ext", ["tar", "tar.gz", "tar.xz", "tar.xz-two-pass", "zip"])
def test_archives_give_the_same_arrays_as_the_folder(tmp_path, tolerant, ext, monkeypatch):
    if ext.endswith("-two-pass"):  # an archive too big to hold in memory: streamed twice
        from reproduce.data import imagefolder

        monkeypatch.setattr(imagefolder, "STREAM_MEMORY_BYTES", 0)
        ext = ext[: -len("-two-pass")]
    src = make_tree(tmp_path / "src")
    arch = make_archive(src, tmp_path / f"data.{ext}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = data.load(cfg(src, tmp_path, val_split="val"))
        with pytest.warns(UserWarning, match="zz_broken.jpg"):
            got = data.load(cfg(arch, tmp_path, val_split="val"))
    assert got.class_names == list(CLASSES)
    for a, b in ((ref.train, got.train), (ref.val, got.val)):
        np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
        np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(ref.stats.mean_image, got.stats.mean_image)
    assert not any(p.suffix in (".jpg", ".png", ".webp") for p in (tmp_path / "cache").rglob("*"))


def test_second_load_reuses_the_cache_without_decoding(tmp_path, tolerant):
    src = make_tree(tmp_path / "src")
    c = cfg(src, tmp_path, val_split="val")
    n0 = data.decode_count()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = data.load(c)
    assert data.decode_count() - n0 == 18  # 9 + 9 (the corrupt file fails, uncounted)
    n1 = data.decode_count()
    again = data.load(c)
    assert data.decode_count() == n1
    np.testing.assert_array_equal(np.asarray(first.train.images), np.asarray(again.train.images))
    np.testing.assert_array_equal(first.stats.pca_eigvals, again.stats.pca_eigvals)
    assert (Path(first.train.cache_path) / cache.STATS).is_file()
    # a different S or subsample is another entry
    data.load_split(cfg(src, tmp_path, val_split="val", max_val=4), "val")
    assert data.decode_count() - n1 == 4


def test_interrupted_cache_is_never_read_and_is_rebuilt(tmp_path, tolerant, monkeypatch):
    # A host name with a dash, which a temp folder's name carries as "_".
    monkeypatch.setattr(socket, "gethostname", lambda: "node-7.lab")
    src = make_tree(tmp_path / "src", corrupt=False)
    c = cfg(src, tmp_path, val_split="val")
    arr = data.load_split(c, "train")
    entry = Path(arr.cache_path)
    good = np.asarray(arr.images).copy()
    # A run killed before its marker: the folder exists, the marker does not.
    (entry / cache.COMPLETE).unlink()
    np.lib.format.open_memmap(entry / cache.IMAGES, mode="r+")[:] = 0  # garbage inside
    # ... and a temp folder of a dead process.
    stale = entry.parent / f".{entry.name}.tmp-{host_tag()}-999999999-abcd1234"
    stale.mkdir()
    n0 = data.decode_count()
    arr2 = data.load_split(c, "train")
    assert data.decode_count() - n0 == 9
    np.testing.assert_array_equal(np.asarray(arr2.images), good)
    assert cache.is_complete(entry) and not stale.exists()


def test_parallel_workers_match_inline_decoding(tmp_path, monkeypatch):
    src = make_tree(tmp_path / "src", corrupt=False, per_class=4)
    ref = data.load_split(cfg(src, tmp_path / "a", val_split="val"), "train")
    monkeypatch.setattr(decode, "PARALLEL_MIN", 0)
    monkeypatch.setattr(decode, "CHUNK_ITEMS", 3)
    monkeypatch.setenv("REPRODUCE_DATA_WORKERS", "2")
    from reproduce.data import imagefolder

    for source, two_pass in (
        (src, False),
        (make_archive(src, tmp_path / "d.tar.xz"), False),
        (make_archive(src, tmp_path / "d.tar.gz"), True),
    ):
        # two_pass: too big to keep in memory -> list, then stream again to the workers
        monkeypatch.setattr(imagefolder, "STREAM_MEMORY_BYTES", 0 if two_pass else 1 << 30)
        n0 = data.decode_count()
        got = data.load_split(cfg(source, tmp_path / "b", val_split="val"), "train")
        assert data.decode_count() - n0 == 12
        np.testing.assert_array_equal(np.asarray(ref.images), np.asarray(got.images))


def test_too_many_corrupt_images_fail_naming_them(tmp_path):
    src = make_tree(tmp_path / "src")
    with pytest.raises(DataError) as e:
        data.load(cfg(src, tmp_path, val_split="val"))
    msg = str(e.value)
    assert "zz_broken.jpg" in msg and "1 of 10 images" in msg and "REPRODUCE_MAX_BAD_FRACTION" in msg
    assert not list((tmp_path / "cache").glob("*__train__*"))  # nothing half-built is left


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load(cfg(tmp_path / "nope", tmp_path))
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="not a supported archive"):
        data.load(cfg(f, tmp_path))
    bad_zip = tmp_path / "broken.zip"
    bad_zip.write_bytes(b"PK not really")
    with pytest.raises(DataError, match="cannot read the archive"):
        data.load(cfg(bad_zip, tmp_path))
    with pytest.raises(DataError, match="needs a dataset name"):
        data.load(cfg("tfds:", tmp_path))


def test_missing_and_empty_splits(tmp_path):
    src = make_tree(tmp_path / "src", splits=("train",), corrupt=False)
    with pytest.raises(DataError, match=r"split 'validation' not found .* splits present: train"):
        data.load(cfg(src, tmp_path))
    for c in CLASSES:
        (src / "mydata" / "val" / c).mkdir(parents=True)
    with pytest.raises(DataError, match=r"split 'val' in .* has no images"):
        data.load(cfg(src, tmp_path))


def test_class_folders_that_differ_between_splits(tmp_path):
    src = make_tree(tmp_path / "src", corrupt=False)
    shutil.rmtree(src / "mydata" / "val" / "bee")
    (src / "mydata" / "val" / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(src / "mydata" / "val" / "dog" / "x.png")
    n0 = data.decode_count()
    with pytest.raises(DataError) as e:
        data.load(cfg(src, tmp_path))
    msg = str(e.value)
    assert "only in 'train': ['bee']" in msg and "only in 'val': ['dog']" in msg
    assert data.decode_count() == n0  # found before decoding anything


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


def test_mean_image_and_pca_equal_numpy():
    rng = np.random.default_rng(3)
    # correlated channels, so the eigenvectors are not the axes
    base = rng.integers(0, 200, (40, 6, 6, 1))
    x = np.clip(base + rng.integers(0, 56, (40, 6, 6, 3)) * [1, 0.5, 0.2], 0, 255).astype(np.uint8)
    st = compute_stats(x, chunk=7)
    np.testing.assert_allclose(st.mean_image, x.astype(np.float64).mean(axis=0), rtol=1e-6)
    pix = x.reshape(-1, 3).astype(np.float64)
    cov = np.cov(pix, rowvar=False, bias=True)
    w, v = np.linalg.eigh(cov)
    w, v = w[::-1], v[:, ::-1]
    np.testing.assert_allclose(st.pca_eigvals, w, rtol=1e-5)
    for i in range(3):  # eigenvectors up to sign
        assert abs(abs(float(st.pca_eigvecs[:, i] @ v[:, i])) - 1) < 1e-5
        np.testing.assert_allclose(cov @ st.pca_eigvecs[:, i], w[i] * st.pca_eigvecs[:, i], rtol=1e-4, atol=1e-3)
    assert st.pca_eigvals[0] >= st.pca_eigvals[1] >= st.pca_eigvals[2]
    assert st.num_pixels == 40 * 36 and st.num_images == 40


def test_load_stats_is_the_training_split_and_cached(tmp_path):
    src = make_tree(tmp_path / "src", corrupt=False)
    c = cfg(src, tmp_path, val_split="val")
    st = data.load_stats(c)
    train = data.load_split(c, "train")
    ref = compute_stats(np.asarray(train.images))
    np.testing.assert_allclose(st.mean_image, ref.mean_image)
    np.testing.assert_allclose(st.pca_eigvals, ref.pca_eigvals)
    assert cache.read_stats(train.cache_path) is not None


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------


def test_array_batches_shuffle_by_seed_and_epoch():
    from reproduce.data import ArrayBatches

    n = 23
    x = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    y = np.arange(n, dtype=np.int32)

    def epoch_labels(b):
        return [b[i][1] for i in range(len(b))]

    b = ArrayBatches(x, y, batch_size=5, shuffle=True, seed=7)
    assert len(b) == 5
    e0 = epoch_labels(b)
    assert all(xb[0].dtype == np.uint8 and xb[1].dtype == np.int32 for xb in (b[0], b[4]))
    assert sorted(np.concatenate(e0).tolist()) == list(range(n))  # each example once
    np.testing.assert_array_equal(b[2][0][:, 0, 0, 0], b[2][1])  # images match labels
    b.on_epoch_end()
    e1 = epoch_labels(b)
    assert not all(np.array_equal(p, q) for p, q in zip(e0, e1))
    # same (seed, epoch) -> same batches; a resumed run passes epoch=
    for p, q in zip(e1, epoch_labels(ArrayBatches(x, y, batch_size=5, seed=7, epoch=1))):
        np.testing.assert_array_equal(p, q)
    other = epoch_labels(ArrayBatches(x, y, batch_size=5, seed=8))
    assert not all(np.array_equal(p, q) for p, q in zip(e0, other))
    # no shuffle, no labels (predict), drop_remainder
    p = ArrayBatches(x, None, batch_size=5, shuffle=False)
    assert len(p[4]) == 1 and p[4][0].shape == (3, 4, 4, 3)
    np.testing.assert_array_equal(p[1][0][:, 0, 0, 0], [5, 6, 7, 8, 9])
    assert len(ArrayBatches(x, y, batch_size=5, drop_remainder=True)) == 4


def test_subset_is_lazy_and_deterministic(tmp_path):
    from reproduce.data import ArrayBatches

    src = make_tree(tmp_path / "src", corrupt=False)
    arr = data.load_split(cfg(src, tmp_path, val_split="val"), "train")
    s1, s2 = data.subset(arr, 4, seed=1), data.subset(arr, 4, seed=1)
    np.testing.assert_array_equal(s1.labels, s2.labels)
    assert len(s1) == 4 and s1.images.shape == (4, 8, 8, 3)
    xb = ArrayBatches(s1.images, s1.labels, 3, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([xb[0][0], xb[1][0]]), np.asarray(s1.images))


# --------------------------------------------------------------------------------------
# Synthetic
# --------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_balanced():
    c = DataConfig(
        source="synthetic", image_size=20, crop_size=16, synthetic_classes=5, synthetic_train=100, synthetic_val=20
    )
    a, b = data.load(c), data.load(c)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    assert a.train.images.shape == (100, 20, 20, 3) and a.val.images.shape == (20, 20, 20, 3)
    assert not np.array_equal(a.train.images[:20], a.val.images)
    assert np.bincount(a.train.labels).tolist() == [20] * 5 and a.num_classes == 5


def test_synthetic_is_learnable_through_augment():
    import keras

    from reproduce.augment import Augment
    from reproduce.data import ArrayBatches

    c = DataConfig(
        source="synthetic", image_size=20, crop_size=16, synthetic_classes=4, synthetic_train=384, synthetic_val=128
    )
    d = data.load(c)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((20, 20, 3), dtype="uint8"),
            Augment(
                16,
                mean_image=d.stats.mean_image,
                pca_eigvals=d.stats.pca_eigvals,
                pca_eigvecs=d.stats.pca_eigvecs,
                seed=0,
            ),
            keras.layers.Rescaling(1 / 64.0),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4),
        ]
    )
    model.compile(
        keras.optimizers.Adam(0.02), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    model.fit(ArrayBatches(d.train, batch_size=32, seed=0), epochs=4, verbose=0, shuffle=False)
    _, acc = model.evaluate(ArrayBatches(d.val, batch_size=64, shuffle=False), verbose=0)
    assert acc > 0.9, acc


# --------------------------------------------------------------------------------------
# TFDS (mocked: no download) and no-TensorFlow use
# --------------------------------------------------------------------------------------


def _tfds_or_skip():
    pytest.importorskip("tensorflow")
    return pytest.importorskip("tensorflow_datasets")


def test_tfds_small_dataset_is_decoded_into_the_cache(tmp_path):
    tfds = _tfds_or_skip()
    c = cfg("tfds:cifar10", tmp_path, image_size=16, crop_size=12, val_split="test")
    with tfds.testing.mock_data(num_examples=8):
        d = data.load(c)
        n0 = data.decode_count()
        again = data.load(c)
    assert data.decode_count() == n0
    assert d.train.images.shape == (8, 16, 16, 3) and d.val.images.shape == (8, 16, 16, 3)
    assert d.num_classes == 10 and len(d.class_names) == 10
    assert d.train.labels.min() >= 0 and d.train.labels.max() < 10
    np.testing.assert_array_equal(np.asarray(d.train.images), np.asarray(again.train.images))
    assert d.stats.mean_image.shape == (16, 16, 3)


def test_tfds_large_dataset_streams(tmp_path, monkeypatch):
    tfds = _tfds_or_skip()
    monkeypatch.setenv("REPRODUCE_STREAM", "1")
    c = cfg("tfds:cifar10", tmp_path, image_size=16, crop_size=12, val_split="test")
    with tfds.testing.mock_data(num_examples=10):
        d = data.load(c)
        assert isinstance(d.train, data.Stream) and len(d.train) == 10
        b = d.train.batches(4, shuffle=True, seed=1)
        assert len(b) == 3
        x, y = b[0]
        assert x.dtype == np.uint8 and x.shape == (4, 16, 16, 3) and y.dtype == np.int32
        seen = [b[i][1] for i in range(1, 3)]
        assert sum(len(s) for s in seen) == 6
        assert d.stats.mean_image.shape == (16, 16, 3) and d.stats.num_images == 10


def test_tfds_imagenet_without_manual_files_says_what_to_do(tmp_path, monkeypatch):
    _tfds_or_skip()
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.delenv("TFDS_MANUAL_DIR", raising=False)
    with pytest.raises(DataError) as e:
        data.load_split(cfg("tfds:imagenet2012", tmp_path), "train")
    msg = str(e.value)
    assert "ILSVRC2012_img_train.tar" in msg and "ILSVRC2012_img_val.tar" in msg
    assert str(tmp_path / "tfds" / "downloads" / "manual") in msg
    assert "~/tensorflow_datasets/downloads/manual/" in msg and "--manual_dir" in msg
    with pytest.raises(DataError, match="nosuchset.*catalog"):
        data.load_split(cfg("tfds:nosuchset", tmp_path), "train")


@pytest.mark.slow
def test_folder_archive_and_synthetic_work_without_tensorflow(tmp_path):
    src = make_tree(tmp_path / "src", corrupt=False)
    arch = make_archive(src, tmp_path / "d.zip")
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from reproduce.config import DataConfig
import reproduce.data as data
for src in ({str(src)!r}, {str(arch)!r}, "synthetic"):
    d = data.load(DataConfig(source=src, image_size=8, crop_size=6, val_split="val",
                             cache_dir={str(tmp_path / "c")!r}, synthetic_train=8,
                             synthetic_val=4))
    assert d.train.images.shape[1:] == (8, 8, 3), d.train.images.shape
try:
    data.load(DataConfig(source="tfds:cifar10"))
except data.DataError as e:
    assert "needs TensorFlow" in str(e)
assert "tensorflow" not in sys.modules
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


# --------------------------------------------------------------------------------------
# Inputs that used to give wrong data without a word
# --------------------------------------------------------------------------------------


def test_a_link_loop_in_a_data_folder_is_refused_naming_it(tmp_path):
    src = make_tree(tmp_path / "src", corrupt=False) / "mydata"
    loop = src / "train" / "apple" / "loop"
    loop.symlink_to("..")  # train/apple/loop -> train: every class again, as "apple"
    with pytest.raises(DataError) as e:
        data.load(cfg(src, tmp_path))
    msg = str(e.value)
    assert f"{loop} links to {(src / 'train').resolve()}, a folder that contains it" in msg
    assert "Remove the link" in msg
    # The folder's identity (the experiment fingerprint) reads the same listing.
    with pytest.raises(DataError, match="a folder that contains it"):
        data_identity(str(src))
    assert not list((tmp_path / "cache").glob("mydata__*"))  # nothing was decoded


def test_links_to_folders_are_followed_and_counted_by_the_identity_too(tmp_path):
    src = make_tree(tmp_path / "src", corrupt=False) / "mydata"
    elsewhere = tmp_path / "disk2" / "more_apples"
    shutil.move(src / "train" / "apple", elsewhere)
    (src / "train" / "apple").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "deeper").symlink_to(tmp_path / "disk2" / "extra", target_is_directory=True)
    (tmp_path / "disk2" / "extra").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "disk2" / "extra" / "x.png")
    d = data.load(cfg(src, tmp_path))
    assert len(d.train) == 10  # 3 classes x 3, and the image behind the second link
    np.testing.assert_array_equal(d.train.labels, [0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    # The identity sees exactly these files: adding one behind the link changes it.
    before = data_identity(str(src))
    Image.new("RGB", (8, 8)).save(tmp_path / "disk2" / "extra" / "y.png")
    from reproduce.sources import _folder_digest

    _folder_digest.cache_clear()  # memoized by the root folder's mtime, which did not change
    assert data_identity(str(src)) != before
    from reproduce.sources import image_files

    assert sorted(n for n in image_files(src / "train") if n.startswith("apple/")) == [
        "apple/00.jpg",
        "apple/01.png",
        "apple/02.webp",
        "apple/deeper/x.png",
        "apple/deeper/y.png",
    ]


def test_a_file_added_deep_inside_a_class_folder_is_loaded_not_the_cached_entry(tmp_path):
    """The cache entry's key sees every file training reads: an image added to a
    nested folder changes neither the split folder's mtime nor the class folder's."""
    src = make_tree(tmp_path / "src", corrupt=False) / "mydata"
    (src / "train" / "apple" / "deeper").mkdir()
    Image.new("RGB", (8, 8)).save(src / "train" / "apple" / "deeper" / "x.png")
    assert len(data.load(cfg(src, tmp_path)).train) == 10
    n0 = data.decode_count()
    assert len(data.load(cfg(src, tmp_path)).train) == 10 and data.decode_count() == n0  # the cache, unchanged
    Image.new("RGB", (8, 8)).save(src / "train" / "apple" / "deeper" / "y.png")
    d = data.load(cfg(src, tmp_path))
    assert len(d.train) == 11
    np.testing.assert_array_equal(d.train.labels, [0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2])


def _png16(path: Path, a: np.ndarray) -> None:
    im = Image.fromarray(a.astype(np.uint16))
    assert im.mode == "I;16"
    im.save(path, format="PNG")


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 65536, (8, 8), dtype=np.uint16)
    a[0, :4] = [0, 65535, 257, 32896]  # -> 0, 255, 1, 128
    p = tmp_path / "deep.png"
    _png16(p, a)
    with Image.open(p) as im:
        assert im.mode == "I;16"  # what Pillow gives for a 16-bit grayscale PNG
    want = np.round(a / 257.0).astype(np.uint8)  # v * 255 / 65535
    got = decode.decode_image(p.read_bytes(), 8)
    np.testing.assert_array_equal(got, np.repeat(want[:, :, None], 3, axis=2))
    # the same pixels through a folder, in training
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "src" / split / c).mkdir(parents=True)
            _png16(tmp_path / "src" / split / c / "x.png", a)
    arr = data.load_split(cfg(tmp_path / "src", tmp_path), "train")
    np.testing.assert_array_equal(arr.images[0], np.repeat(want[:, :, None], 3, axis=2))
    # and in predict, which reads a file as training does
    from reproduce.inference import read_image

    np.testing.assert_array_equal(read_image(p, 8), np.repeat(want[:, :, None], 3, axis=2))


def _huge_member_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.PAX_FORMAT)


@pytest.mark.parametrize("ext", ["tar.gz", "tar"])
def test_a_huge_archive_member_is_refused_from_its_header_without_reading_it(tmp_path, ext, monkeypatch):
    """A 3 GB member (its tar header says so; a .tar.gz of it is tiny) is refused
    before a byte of it is read: reading first used gigabytes of memory."""
    src = make_tree(tmp_path / "src", corrupt=False)
    member = "mydata/train/apple/huge.png"
    size = 3 << 30
    small = make_archive(src, tmp_path / "small.tar")
    with tarfile.open(small) as t:  # the members, without the end-of-archive blocks
        end = max(m.offset_data + -(-m.size // 512) * 512 for m in t.getmembers())
    body = small.read_bytes()[:end]
    out = tmp_path / f"data.{ext}"
    if ext == "tar":  # a sparse file: the 3 GB cost no disk
        with open(out, "wb") as f:
            f.write(body + _huge_member_header(member, size))
            f.truncate(f.tell() + size + 1024)
    else:
        import gzip

        out.write_bytes(gzip.compress(body + _huge_member_header(member, size)))  # header only
    read = []
    real_extractfile = tarfile.TarFile.extractfile
    monkeypatch.setattr(
        tarfile.TarFile, "extractfile", lambda self, m: read.append(m.name) or real_extractfile(self, m)
    )
    with pytest.raises(DataError) as e:
        data.load(cfg(out, tmp_path))
    msg = str(e.value)
    assert (
        f"the member 'mydata/train/apple/huge.png' of the archive {out} is 3,072.0 MiB "
        f"({size} bytes), more than the 64.0 MiB one image file may have"
    ) in msg
    assert "Remove it from the archive" in msg
    assert member not in read


def test_the_image_size_cap_applies_to_zip_members_and_folder_files(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "MAX_IMAGE_BYTES", 1024)
    src = make_tree(tmp_path / "src", corrupt=False)
    big = src / "mydata" / "train" / "apple" / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 1024 and all(p.stat().st_size <= 1024 for p in src.rglob("0*.*"))
    with pytest.raises(
        DataError,
        match=r"the member 'train/apple/big.png' of the archive .*d.zip "
        r"is [0-9.]+ KiB \([0-9]+ bytes\), more than the 1.0 KiB",
    ):
        data.load(cfg(make_archive(src / "mydata", tmp_path / "d.zip"), tmp_path))
    # a folder: that file is an unreadable one, named (one of 10: tolerated at 20%)
    monkeypatch.setenv("REPRODUCE_MAX_BAD_FRACTION", "0.2")
    with pytest.warns(UserWarning, match=r"big.png: ValueError: the file is .* more than the"):
        d = data.load(cfg(src, tmp_path))
    assert len(d.train) == 9


def test_a_bad_worker_count_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRODUCE_DATA_WORKERS", "abc")
    with pytest.raises(DataError, match=r"REPRODUCE_DATA_WORKERS='abc' is not a whole number"):
        decode.num_workers()


@pytest.mark.parametrize("value", ["nan", "-1", "5"])
def test_a_bad_tolerance_of_unreadable_images_names_the_variable(tmp_path, monkeypatch, value):
    """NaN compares false with every fraction: it would skip every unreadable image."""
    src = make_tree(tmp_path / "src")  # one unreadable image of 10 in train
    monkeypatch.setenv("REPRODUCE_MAX_BAD_FRACTION", value)
    with pytest.raises(DataError) as e:
        data.load(cfg(src, tmp_path))
    assert str(e.value) == (
        f"REPRODUCE_MAX_BAD_FRACTION='{value}' is not a fraction in [0, 1]: set it to the share of a split's "
        "images that may be unreadable and skipped (e.g. REPRODUCE_MAX_BAD_FRACTION=0.05), or unset it for "
        "the default 0.01."
    )
    assert not list((tmp_path / "cache").glob("*__train__*"))  # nothing half-built is left


def test_a_cache_built_under_a_raised_tolerance_says_so_when_reused(tmp_path, monkeypatch):
    src = make_tree(tmp_path / "src")  # one unreadable image of 10 in train
    monkeypatch.setenv("REPRODUCE_MAX_BAD_FRACTION", "0.2")
    with pytest.warns(UserWarning, match="skipping 1 unreadable"):
        data.load_split(cfg(src, tmp_path), "train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within the limit it was built under: silent
        data.load_split(cfg(src, tmp_path), "train")
    monkeypatch.delenv("REPRODUCE_MAX_BAD_FRACTION")
    with pytest.warns(UserWarning) as rec:
        arr = data.load_split(cfg(src, tmp_path), "train")
    (msg,) = [str(w.message) for w in rec]
    assert (
        f"the cache entry {arr.cache_path} was built skipping 1 of 10 unreadable images "
        f"(10.0%), more than the 1% allowed now"
    ) in msg
    assert "REPRODUCE_MAX_BAD_FRACTION" in msg and "delete it to rebuild" in msg


@pytest.mark.parametrize("ext", ["", "tar"])
def test_empty_class_folders_are_named_when_left_out(tmp_path, ext):
    src = make_tree(tmp_path / "src", corrupt=False)
    for split in ("train", "val"):
        (src / "mydata" / split / "dog").mkdir()
        (src / "mydata" / split / "dog" / "readme.txt").write_text("no images yet")
        (src / "mydata" / split / "emu").mkdir()
    source = make_archive(src, tmp_path / f"d.{ext}") if ext else src
    for _ in range(2):  # built, then read from the cache: said both times
        with pytest.warns(UserWarning) as rec:
            d = data.load(cfg(source, tmp_path))
        msgs = [str(w.message) for w in rec if "class folder" in str(w.message)]
        assert len(msgs) == 2  # train and val
        assert "2 class folder(s) of split 'train'" in msgs[0] and "dog, emu" in msgs[0]
        assert "hold no images and are left out" in msgs[0]
        assert d.class_names == list(CLASSES)
