"""The embedded benchmark with headroom: class counts, families, determinism, cache, registry."""

import re

import numpy as np
import pytest

from mtl_keras.data.registry import list_benchmarks, load_benchmark
from mtl_keras.data.sources import glyph_scenes, glyphs

SETTINGS = dict(image_size=16, instances_per_class=4, verbose=False)


@pytest.fixture(scope="module")
def splits(glyph_cache):
    return glyph_scenes.load(cache_dir=glyph_cache, **SETTINGS)


def _codepoint(name):
    return int(re.fullmatch(r".+ \(U\+([0-9A-F]{4,6})\)", name).group(1), 16)


def test_shaped_like_mini_imagenet(splits):
    assert [s.name for s in splits] == ["train", "val", "test"]
    assert [s.num_classes for s in splits] == [64, 16, 20]
    assert all(s.benchmark == "glyph_scenes" for s in splits)
    for split in splits:
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (16, 16, 3)
        np.testing.assert_array_equal(np.bincount(split.labels), np.full(split.num_classes, 4))
    ids = np.concatenate([s.class_ids for s in splits])
    np.testing.assert_array_equal(ids, np.arange(100))  # global ids, train first
    names = [n for s in splits for n in s.class_names]
    assert len(set(names)) == 100 and len({_codepoint(n) for n in names}) == 100


def test_colour_scenes_not_grey_glyphs(splits):
    images = splits[0].images.astype(np.float32)
    spread = images.max(axis=-1) - images.min(axis=-1)  # colour: channels differ
    assert spread.mean() > 30
    per_image_mean = images.mean(axis=(1, 2))  # backgrounds differ from image to image
    assert per_image_mean.std(axis=0).min() > 20


def test_lookalike_families_stay_in_one_split_and_classes_come_from_enough_fonts():
    fonts = [glyphs._Font(p) for p in glyphs.font_files()]
    classes = glyph_scenes.choose_classes(fonts)
    assert len(classes) == 100
    splits = np.array([s for _, _, s in classes])
    np.testing.assert_array_equal(np.bincount(splits), [64, 16, 20])
    assert np.all(np.diff(splits) >= 0)  # ordered by split: the order of the global ids
    families = np.arange(100) // glyph_scenes.FAMILY_SIZE
    for family in np.unique(families):
        assert len(set(splits[families == family])) == 1
    assert all(len(class_fonts) >= glyph_scenes.MIN_FONTS for _, class_fonts, _ in classes)


@pytest.mark.slow  # `make test-slow`: 28 s of the fresh-clone CI run on 2 AVX2 EPYC cores of 2026-12-07 (39 min in all, over 30)
def test_build_is_deterministic_and_independent_of_threads():
    fonts = glyphs.font_files()
    one = glyph_scenes.build_arrays(fonts, 16, 2, seed=3, workers=1)
    two = glyph_scenes.build_arrays(fonts, 16, 2, seed=3, workers=2)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)
    other = glyph_scenes.build_arrays(fonts, 16, 2, seed=4, workers=2)
    np.testing.assert_array_equal(one["codepoints"], other["codepoints"])  # classes do not depend on seed
    assert not np.array_equal(one["images"], other["images"])


def test_in_pixel_space_a_class_is_no_closer_to_itself_than_to_others(splits):
    """Instances differ within a class as much as across classes (backgrounds, colours,
    clutter, pose): pixel distances do not tell the classes apart, features must."""
    train = splits[0]
    x = train.images.reshape(len(train.images), -1).astype(np.float32) / 255
    dist = np.sqrt(np.maximum((x**2).sum(1)[:, None] + (x**2).sum(1)[None] - 2 * x @ x.T, 0))
    same = train.labels[:, None] == train.labels[None]
    np.fill_diagonal(same, False)
    other = train.labels[:, None] != train.labels[None]
    assert dist[same].mean() > 0.95 * dist[other].mean()


def test_cached_after_the_first_build(glyph_cache, monkeypatch, splits):
    def fail(*args, **kwargs):
        raise AssertionError("rebuilt instead of reading the cache")

    monkeypatch.setattr(glyph_scenes, "build_arrays", fail)
    again = glyph_scenes.load(cache_dir=glyph_cache, **SETTINGS)
    np.testing.assert_array_equal(again[0].images, splits[0].images)
    path = glyph_scenes.cache_path(glyphs.font_files(), 16, 4, 0, glyph_cache)
    assert path.is_file() and not list(path.parent.glob(path.name + ".*.tmp"))
    other_style = glyph_scenes.SceneStyle(distractors=(0, 0))
    assert glyph_scenes.cache_path(glyphs.font_files(), 16, 4, 0, glyph_cache, other_style) != path


def test_registry_lists_and_loads_it(glyph_cache):
    assert "glyph_scenes" in list_benchmarks()
    train, val, test = load_benchmark("glyph_scenes", cache_dir=glyph_cache, **SETTINGS)
    assert (train.num_classes, val.num_classes, test.num_classes) == (64, 16, 20)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="image_size"):
        glyph_scenes.load(image_size=8, verbose=False)
    with pytest.raises(ValueError, match="instances_per_class"):
        glyph_scenes.load(instances_per_class=0, verbose=False)
