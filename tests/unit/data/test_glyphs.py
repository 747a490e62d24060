"""The embedded glyph dataset: splits, images, lookalike removal, cache, registry."""

import re
import shutil
import unicodedata

import numpy as np
import pytest

from mtl_keras.data.registry import load_benchmark
from mtl_keras.data.sources import glyphs

SIZE = 16
PER_CLASS = 20
SETTINGS = dict(image_size=SIZE, instances_per_class=PER_CLASS, verbose=False)


@pytest.fixture(scope="module")
def splits(glyph_cache):
    return glyphs.load(cache_dir=glyph_cache, **SETTINGS)


def _codepoint(class_name):
    return int(re.fullmatch(r".+ \(U\+([0-9A-F]{4,6})\)", class_name).group(1), 16)


def _all_codepoints(splits):
    return [_codepoint(n) for split in splits for n in split.class_names]


def test_split_names_benchmark_and_sizes(splits):
    assert [s.name for s in splits] == ["train", "val", "test"]
    assert all(s.benchmark == "glyphs" for s in splits)
    counts = np.array([s.num_classes for s in splits])
    assert counts.min() >= 20
    fractions = counts / counts.sum()
    assert 0.55 <= fractions[0] <= 0.75
    assert 0.10 <= fractions[1] <= 0.25
    assert 0.12 <= fractions[2] <= 0.30


def test_splits_are_class_disjoint(splits):
    names = [n for s in splits for n in s.class_names]
    assert len(names) == len(set(names))
    ids = np.concatenate([s.class_ids for s in splits])
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # global, unique, train first


def test_splits_are_disjoint_by_script(splits):
    split_of_script = {}
    for split in splits:
        for name in split.class_names:
            script = glyphs.script_of(chr(_codepoint(name)))
            assert script is not None
            assert glyphs.SCRIPTS[script][0] == split.name
            assert split_of_script.setdefault(script, split.name) == split.name


def test_class_names_are_unicode_names(splits):
    for split in splits:
        for name in split.class_names:
            cp = _codepoint(name)
            assert name == f"{unicodedata.name(chr(cp))} (U+{cp:04X})"
            assert unicodedata.category(chr(cp))[0] in "LNPS"
            assert not unicodedata.decomposition(chr(cp))  # no precomposed letters


def test_every_class_has_instances_per_class_images(splits):
    for split in splits:
        np.testing.assert_array_equal(split.class_counts(), PER_CLASS)


def test_images_are_uint8_white_on_black_and_not_blank(splits):
    for split in splits:
        images = split.images
        assert images.dtype == np.uint8
        assert images.shape == (split.num_images, SIZE, SIZE, 1)
        assert images.max(axis=(1, 2, 3)).min() >= 64  # every image has ink
        border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
        assert border.mean() < 10  # black background, glyph kept inside the frame
        # Glyphs are centred: the mean image's ink centroid is near the middle.
        mean = images[..., 0].astype(np.float64).mean(0)
        ys, xs = np.mgrid[:SIZE, :SIZE]
        centre = (SIZE - 1) / 2
        assert abs((mean * ys).sum() / mean.sum() - centre) < 1.0
        assert abs((mean * xs).sum() / mean.sum() - centre) < 1.0


def test_instances_of_a_class_differ(splits):
    train = splits[0]
    for c in range(0, train.num_classes, 97):
        items = train.images[train.items_of(c)].reshape(PER_CLASS, -1)
        assert len(np.unique(items, axis=0)) == PER_CLASS


def test_no_near_identical_classes_within_a_split(splits):
    for split in splits:
        x = split.images[..., 0].astype(np.float32) / 255
        means = np.stack([x[split.items_of(c)].mean(0) for c in range(split.num_classes)])
        means = means.reshape(split.num_classes, -1)
        sq = (means**2).sum(1)
        dist = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * means @ means.T, 0) / means.shape[1])
        np.fill_diagonal(dist, np.inf)
        assert dist.min() > 0.03, split.name


def test_cross_script_lookalikes_are_dropped(splits):
    present = {chr(cp) for cp in _all_codepoints(splits)}
    # Latin / Greek / Cyrillic homoglyphs and case pairs of the same shape give one class.
    for group in ("AΑА", "BΒВ", "EΕЕ", "HΗН", "OΟОoο", "PΡР", "TΤТ", "XΧХxх", "cCсС", "sS", "Iӏ|l"):
        assert len(present & set(group)) <= 1, group
    assert "A" in present and "Ж" in present and "λ" in present


def test_odd_encoded_fonts_are_excluded_or_filtered():
    names = [p.name for p in glyphs.font_files()]
    assert "DejaVuSans.ttf" in names
    assert not [n for n in names if n.startswith(glyphs.EXCLUDED_FONT_PREFIXES)]
    # cmr10 puts "exclamdown" at "<": its cmap entry must not count as "<".
    cmr10 = next(p for p in glyphs.font_files() if p.name == "cmr10.ttf")
    codepoints = glyphs._Font(cmr10).codepoints()
    assert ord("A") in codepoints and ord("<") not in codepoints


def test_deterministic_across_cache_dirs(splits, tmp_path):
    again = glyphs.load(cache_dir=tmp_path / "other", **SETTINGS)
    for a, b in zip(splits, again):
        assert a.class_names == b.class_names
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
    assert [p.name for p in (tmp_path / "other").iterdir()] == [
        glyphs.cache_path(glyphs.font_files(), SIZE, PER_CLASS, 0).name
    ]  # one file, written atomically (no temporary files left)


def test_second_load_reads_the_cache(splits, glyph_cache, monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise AssertionError("rebuilt instead of reading the cache")

    monkeypatch.setattr(glyphs, "_build_arrays", boom)
    monkeypatch.setattr(glyphs, "_render_class", boom)
    again = glyphs.load(cache_dir=glyph_cache, image_size=SIZE, instances_per_class=PER_CLASS)
    np.testing.assert_array_equal(again[2].images, splits[2].images)
    lines = capsys.readouterr().out.splitlines()
    assert any("cache" in line for line in lines)
    for name in ("train", "val", "test"):
        assert sum(f"glyphs {name}: " in line for line in lines) == 1


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    path = glyphs.cache_path(glyphs.font_files(), SIZE, PER_CLASS, 0, tmp_path)
    path.write_bytes(b"not a zip file")
    sentinel = {"called": False}

    def fake_build(*args, **kwargs):
        sentinel["called"] = True
        raise RuntimeError("stop here")

    monkeypatch.setattr(glyphs, "_build_arrays", fake_build)
    with pytest.raises(RuntimeError, match="stop here"):
        glyphs.load(cache_dir=tmp_path, **SETTINGS)
    assert sentinel["called"]


def test_cache_key_follows_fonts_and_settings(tmp_path, monkeypatch):
    fonts = glyphs.font_files()
    base = glyphs.cache_path(fonts, 32, 20, 0, tmp_path)
    assert base.parent == tmp_path and base.suffix == ".npz"
    assert glyphs.cache_path(fonts, 32, 20, 0, tmp_path) == base
    assert glyphs.cache_path(fonts, 28, 20, 0, tmp_path) != base
    assert glyphs.cache_path(fonts, 32, 10, 0, tmp_path) != base
    assert glyphs.cache_path(fonts, 32, 20, 1, tmp_path) != base
    changed = tmp_path / "DejaVuSans.ttf"
    changed.write_bytes(fonts[0].read_bytes() + b"\0")
    assert glyphs.cache_path([*fonts[1:], changed], 32, 20, 0, tmp_path) != base
    monkeypatch.setenv("MTL_KERAS_CACHE", str(tmp_path / "env"))
    assert glyphs.cache_path(fonts, 32, 20, 0).parent == tmp_path / "env"


def test_extra_font_dirs(tmp_path):
    fonts = glyphs.font_files()
    shutil.copy(fonts[0], tmp_path / "copy.ttf")  # same bytes as a font already used
    (tmp_path / "readme.txt").write_text("not a font")
    assert glyphs.font_files([tmp_path]) == fonts
    with pytest.raises(FileNotFoundError, match="extra font folder"):
        glyphs.font_files([tmp_path / "missing"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="image_size"):
        glyphs.load(image_size=4, verbose=False)
    with pytest.raises(ValueError, match="instances_per_class"):
        glyphs.load(instances_per_class=0, verbose=False)


def test_load_benchmark_glyphs(splits, glyph_cache):
    bench = load_benchmark("glyphs", cache_dir=glyph_cache, **SETTINGS)
    assert [s.class_names for s in bench] == [s.class_names for s in splits]
    np.testing.assert_array_equal(bench.train.images, splits[0].images)
