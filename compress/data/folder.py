"""An ImageFolder tree (``root/<class>/<image>``) read lazily with Pillow.

Grayscale images stay single-channel; everything else is converted to RGB. Pixels are scaled to
[0, 1]. Classes are the sorted sub-folder names, as in torchvision's ImageFolder.
"""

from __future__ import annotations

from pathlib import Path

from compress.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class ImageFolderDataset:
    """``torch.utils.data.Dataset`` of (image tensor C x H x W, class index)."""

    def __init__(self, root: Path):
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.samples = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((root / name).rglob("*"))
            if path.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not self.samples:
            raise InputError(
                f"no images found under {root}; expected {root}/<class>/<image>.png (or .jpg, ...)"
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple["object", int]:
        import numpy as np
        import torch
        from PIL import Image

        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                mode = "L" if image.mode in {"L", "1", "I", "I;16", "F"} else "RGB"
                pixels = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
        except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError is an OSError
            raise InputError(f"cannot read image {path}: {str(error).splitlines()[0]}; remove it or fix the "
                             f"file") from None
        tensor = torch.from_numpy(pixels)
        tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        return tensor, label
