"""How long `mtl-keras prepare tiered_imagenet` takes: converts synthetic pickles of N images.

Writes Ren et al.'s layout for one split (``train_labels.pkl`` and ``train_images_png.pkl``, or
``train_images.npz``) with N random 84×84 RGB images in a temporary folder, converts it with
`mtl_keras.data.sources.tiered_imagenet.convert_pickles` and prints images per second for the
whole call (reading the pickle included). tieredImageNet has 448,695 / 124,261 / 206,209
train / val / test images.

    python benchmarks/probes/prepare_tiered_speed.py --images 20000
    python benchmarks/probes/prepare_tiered_speed.py --images 20000 --npz
"""

from __future__ import annotations

import argparse
import io
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mtl_keras.data.sources.tiered_imagenet import convert_pickles

TIERED_IMAGES = 448_695 + 124_261 + 206_209


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument(
        "--npz", action="store_true", help="the decompressed .npz variant (PNG encoding needed)"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # Smooth random images (PNG-compressible like photos, unlike white noise).
    base = rng.integers(0, 256, (64, 21, 21, 3), dtype=np.uint8)
    images = np.stack([np.kron(base[i % 64], np.ones((4, 4, 1), np.uint8)) for i in range(args.images)])
    labels = np.arange(args.images, dtype=np.int32) % args.classes
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        meta = {"label_specific": labels, "label_specific_str": [f"class {c}" for c in range(args.classes)]}
        (src / "train_labels.pkl").write_bytes(pickle.dumps(meta, protocol=2))
        if args.npz:
            np.savez(src / "train_images.npz", images=images[..., ::-1])
        else:
            pngs = []
            for x in images:
                buffer = io.BytesIO()
                Image.fromarray(x).save(buffer, format="PNG")
                pngs.append(np.frombuffer(buffer.getvalue(), np.uint8))
            (src / "train_images_png.pkl").write_bytes(pickle.dumps(pngs, protocol=2))
        start = time.perf_counter()
        convert_pickles(src, Path(tmp) / "out", allow_pickle=True, splits=["train"], progress=lambda *a: None)
        seconds = time.perf_counter() - start
    rate = args.images / seconds
    kind = "train_images.npz (PNG-encoded here)" if args.npz else "train_images_png.pkl (PNGs copied)"
    print(
        f"{args.images} images from {kind}: {seconds:.1f} s, {rate:.0f} images/s; "
        f"all {TIERED_IMAGES} tieredImageNet images at this rate: {TIERED_IMAGES / rate / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
