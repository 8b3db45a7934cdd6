"""Images in class folders, root/<split>/<class>/*.jpg, as a clip source of one-frame clips.

Classes sorted by folder name are labels 0..C-1 (torchvision's ImageFolder order). Each entry
loads as uint8 [1, 1, H, W, 3] (one segment of one frame), the form every clip source returns,
and raises video.VideoError for a file that cannot be decoded (the pipeline skips it).
"""
import os

import numpy as np

from vjepa_jax.data import video as video_lib

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def image_clip(image, where):
    """uint8 [H, W, 3] (or [H, W] / [H, W, 1] / RGBA) -> one segment of one frame [1, 1, H, W, 3]."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise video_lib.VideoError(f"{where}: expected an image [H, W, 3], got {image.shape}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    image = image[..., :3].astype(np.uint8, copy=False)
    return image[None, None]


class ImageFolder:
    """Images under root/<split>/<class>/*.jpg; classes sorted by name are labels 0..C-1."""

    def __init__(self, root, split, num_classes=0, subset=""):
        """subset: a text file of image file names, one a line (e.g. n01440764_10026.JPEG; the
        1 % ImageNet split), keeping only those images; '' keeps all."""
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"image folder {folder} does not exist (data.root={root!r}, "
                                    f"split {split!r}); expected {folder}/<class>/<image>")
        classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        if num_classes and len(classes) != num_classes:
            raise ValueError(f"{folder} has {len(classes)} class folders, config "
                             f"data.num_classes={num_classes}")
        self.classes = tuple(classes)
        paths, labels = [], []
        for label, cls in enumerate(classes):
            for dirpath, _, files in sorted(os.walk(os.path.join(folder, cls))):
                for f in sorted(files):
                    if f.lower().endswith(IMAGE_EXTENSIONS):
                        paths.append(os.path.join(dirpath, f))
                        labels.append(label)
        if subset:
            paths, labels = _keep_subset(paths, labels, subset, folder)
        if not paths:
            raise ValueError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
        self.paths = tuple(paths)
        self.labels = np.asarray(labels, np.int64)
        self.ranges = [(0, len(paths))]
        self.weights = ()

    def __len__(self):
        return len(self.paths)

    def name(self, i):
        return self.paths[i]

    def load(self, i, rng):
        del rng
        from PIL import Image  # Pillow comes with matplotlib

        try:
            with Image.open(self.paths[i]) as im:
                image = np.asarray(im.convert("RGB"))
        except Exception as e:  # PIL raises several types for a broken file
            raise video_lib.VideoError(f"cannot decode image: {type(e).__name__}: {e}") from e
        return image_clip(image, self.paths[i]), int(self.labels[i])


def _keep_subset(paths, labels, subset, folder):
    """The (paths, labels) whose file name is listed in the text file `subset`, all of them found."""
    with open(subset) as f:
        names = {line.strip() for line in f if line.strip()}
    kept = [(p, label) for p, label in zip(paths, labels) if os.path.basename(p) in names]
    missing = len(names) - len(kept)
    if missing:
        raise ValueError(f"{subset}: {missing} of its {len(names)} image names are not under "
                         f"{folder}")
    return [p for p, _ in kept], [label for _, label in kept]
