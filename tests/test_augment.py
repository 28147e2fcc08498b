"""Augment (§2 mean, §4.1 crops/flips/PCA colour) and ten_views, on both backends.

Geometry is checked on images whose pixels encode their own coordinates:
channel 0 = row, channel 1 = column, channel 2 = image index.
"""

import keras
import numpy as np
import pytest

from reproduce.augment import Augment, ten_views

S, C, B = 20, 13, 48


def coord_images(b=B, s=S):
    yy, xx = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    idx = np.broadcast_to(np.arange(b)[:, None, None], (b, s, s))
    return np.stack([np.broadcast_to(yy, (b, s, s)), np.broadcast_to(xx, (b, s, s)), idx], -1).astype(np.uint8)


def np_params(layer, b=B):
    """The draws a fresh layer with this seed makes on its first training call."""
    if not layer.built:
        layer.build((None, S, S, 3))
    p = layer.sample_params(b, training=True)
    return {k: np.asarray(v) for k, v in p.items()}


def test_random_crops_are_in_range_contiguous_and_flipped():
    x = coord_images()
    expected = np_params(Augment(C, pca_color=False, mean_subtract=False, seed=5))
    out = np.asarray(Augment(C, pca_color=False, mean_subtract=False, seed=5)(x, training=True))
    assert out.shape == (B, C, C, 3) and out.dtype == np.float32
    r = np.arange(C)
    for b in range(B):
        oy, ox, flip = (int(expected[k][b]) for k in ("offset_y", "offset_x", "flip"))
        assert 0 <= oy <= S - C and 0 <= ox <= S - C
        assert (out[b, :, :, 2] == b).all()  # the image's own pixels
        np.testing.assert_array_equal(out[b, :, :, 0], np.broadcast_to((oy + r)[:, None], (C, C)))
        cols = ox + (r[::-1] if flip else r)  # a flip reverses the columns
        np.testing.assert_array_equal(out[b, :, :, 1], np.broadcast_to(cols[None, :], (C, C)))
    # the draws vary across images: offsets cover the range, both flip states occur
    assert set(expected["flip"].tolist()) == {0, 1}
    assert len(set(expected["offset_y"].tolist())) > 3 and len(set(expected["offset_x"].tolist())) > 3


def test_mean_is_subtracted_before_the_crop():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (B, S, S, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, (S, S, 3)).astype(np.float32)
    p = np_params(Augment(C, pca_color=False, mean_image=mean, seed=9))
    out = np.asarray(Augment(C, pca_color=False, mean_image=mean, seed=9)(x, training=True))
    diff = x.astype(np.float32) - mean
    for b in range(B):
        oy, ox = int(p["offset_y"][b]), int(p["offset_x"][b])
        want = diff[b, oy : oy + C, ox : ox + C]
        if p["flip"][b]:
            want = want[:, ::-1]
        np.testing.assert_allclose(out[b], want, rtol=0, atol=1e-4)


def test_inference_is_the_exact_centre_crop_minus_mean():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (4, S, S, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, (S, S, 3)).astype(np.float32)
    o = (S - C) // 2
    want = x[:, o : o + C, o : o + C].astype(np.float32) - mean[o : o + C, o : o + C]
    layer = Augment(C, mean_image=mean, pca_eigvals=[9, 4, 1], pca_eigvecs=np.eye(3), seed=0)
    np.testing.assert_allclose(np.asarray(layer(x)), want, atol=1e-4)
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), want, atol=1e-4)
    # training without crop_flip: the centre window, unflipped
    no_cf = Augment(C, crop_flip=False, pca_color=False, mean_image=mean, seed=0)
    np.testing.assert_allclose(np.asarray(no_cf(x, training=True)), want, atol=1e-4)
    # no mean subtraction
    raw = Augment(C, crop_flip=False, pca_color=False, mean_subtract=False)
    np.testing.assert_array_equal(np.asarray(raw(x)), x[:, o : o + C, o : o + C].astype(np.float32))


@pytest.mark.parametrize("unit", [1.0, 255.0])
def test_pca_colour_is_a_per_image_shift_along_the_eigenvectors(unit):
    """§4.1: each image gets + P (alpha * lambda) [/ pca_unit], the same at every pixel."""
    rng = np.random.default_rng(2)
    eigvecs = np.linalg.qr(rng.normal(size=(3, 3)))[0].astype(np.float32)
    eigvals = np.array([5000.0, 300.0, 40.0], np.float32)
    x = rng.integers(0, 256, (B, S, S, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, (S, S, 3)).astype(np.float32)
    kw = dict(mean_image=mean, pca_eigvals=eigvals, pca_eigvecs=eigvecs, pca_unit=unit, seed=3)
    drawn = np_params(Augment(C, **kw))["alpha"]
    # On real images: with - without PCA (same seed, so the same crops) is constant
    # over each image's pixels.
    with_pca = np.asarray(Augment(C, **kw)(x, training=True), np.float64)
    without = np.asarray(Augment(C, **{**kw, "pca_color": False})(x, training=True), np.float64)
    shift = with_pca - without
    per_image = shift[:, :1, :1, :]
    np.testing.assert_allclose(shift, np.broadcast_to(per_image, shift.shape), atol=1e-3)
    # On black images with a zero mean the output is the shift alone (no float32
    # cancellation): reconstruct alpha from shift = P (alpha * lambda) / unit.
    zero = np.zeros((B, S, S, 3), np.uint8)
    z = np.asarray(Augment(C, **{**kw, "mean_image": np.zeros((S, S, 3))})(zero, training=True), np.float64)
    np.testing.assert_allclose(z, np.broadcast_to(z[:, :1, :1], z.shape), rtol=1e-6)
    np.testing.assert_allclose(z[:, 0, 0], per_image[:, 0, 0], atol=1e-3)
    alpha = np.linalg.solve(eigvecs.astype(np.float64), z[:, 0, 0, :].T * unit).T / eigvals
    np.testing.assert_allclose(alpha, drawn, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        z[:, 0, 0, :], (drawn * eigvals) @ eigvecs.T / unit, rtol=1e-5, atol=1e-6 * np.abs(z).max()
    )
    assert 0.06 < alpha.std() < 0.14  # alpha ~ N(0, 0.1)


def test_seed_fixes_every_draw_and_calls_differ():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (8, S, S, 3), dtype=np.uint8)
    kw = dict(mean_image=np.zeros((S, S, 3)), pca_eigvals=[100, 10, 1], pca_eigvecs=np.eye(3), seed=11)
    a, b = Augment(C, **kw), Augment(C, **kw)
    a1, a2 = np.asarray(a(x, training=True)), np.asarray(a(x, training=True))
    b1, b2 = np.asarray(b(x, training=True)), np.asarray(b(x, training=True))
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert not np.array_equal(a1, a2)  # a new draw each use
    c1 = np.asarray(Augment(C, **{**kw, "seed": 12})(x, training=True))
    assert not np.array_equal(a1, c1)


def test_ten_views_are_the_corners_centre_and_their_reflections():
    x = coord_images(b=3)
    rng = np.random.default_rng(5)
    mean = rng.uniform(0, 50, (S, S, 3)).astype(np.float32)
    v = np.asarray(ten_views(x, C, mean))
    assert v.shape == (10, 3, C, C, 3) and v.dtype == np.float32
    d = x.astype(np.float32) - mean
    e, m = S - C, (S - C) // 2
    windows = [(0, 0), (0, e), (e, 0), (e, e), (m, m)]
    for i, (oy, ox) in enumerate(windows):
        crop = d[:, oy : oy + C, ox : ox + C]
        np.testing.assert_allclose(v[i], crop, atol=1e-5)
        np.testing.assert_allclose(v[5 + i], crop[:, :, ::-1], atol=1e-5)
    # without a mean: raw coordinates, corners at the image corners
    w = np.asarray(ten_views(x, C))
    assert w[3, 0, -1, -1, 0] == S - 1 and w[3, 0, -1, -1, 1] == S - 1
    assert w[5, 0, 0, 0, 1] == C - 1  # reflected top-left starts at column C-1
    # inference of Augment == the centre view
    np.testing.assert_allclose(np.asarray(Augment(C, pca_color=False, mean_image=mean)(x)), v[4], atol=1e-5)


def test_saved_with_the_model_and_compiled_in_a_train_step(tmp_path):
    rng = np.random.default_rng(6)
    mean = rng.uniform(0, 255, (S, S, 3)).astype(np.float32)
    eigvals = np.array([50.0, 5.0, 0.5], np.float32)
    eigvecs = np.linalg.qr(rng.normal(size=(3, 3)))[0].astype(np.float32)
    layer = Augment(C, pca_std=0.2, mean_image=mean, pca_eigvals=eigvals, pca_eigvecs=eigvecs, seed=1, name="augment")
    assert not layer.trainable_weights and len(layer.non_trainable_weights) == 3
    cfg = layer.get_config()
    assert cfg["crop_size"] == C and cfg["seed"] == 1 and cfg["pca_std"] == 0.2
    inputs = keras.Input((S, S, 3), dtype="uint8")
    h = layer(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.integers(0, 256, (8, S, S, 3), dtype=np.uint8)
    model.fit(x, np.arange(8) % 2, batch_size=4, epochs=1, verbose=0)  # compiled step
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    aug = loaded.get_layer("augment")
    assert isinstance(aug, Augment) and aug.crop_size == C and aug.pca_std == 0.2
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(aug.mean_image), mean)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(aug.pca_eigvals), eigvals)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(aug.pca_eigvecs), eigvecs)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_output_follows_the_mixed_precision_policy():
    x = coord_images(b=4)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = Augment(
            C, mean_image=np.full((S, S, 3), 0.5, np.float32), pca_eigvals=[1, 1, 1], pca_eigvecs=np.eye(3), seed=0
        )
        y = layer(x, training=True)
        assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
        assert layer.mean_image.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_arguments():
    with pytest.raises(ValueError, match="larger than the images"):
        Augment(C + 10, mean_image=np.zeros((S, S, 3)))
    with pytest.raises(ValueError, match="pca_eigvals"):
        Augment(C, pca_eigvals=[1, 2])
    with pytest.raises(ValueError, match=r"\(S, S, 3\)"):
        Augment(C, mean_image=np.zeros((S, S + 1, 3)))
