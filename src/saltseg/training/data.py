"""Training data: labelled tiles in memory or read lazily, folds, pseudo-labels, and the DataModule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, WeightedRandomSampler

from saltseg.artifacts import names
from saltseg.data.folds import make_folds
from saltseg.data.tiles import TileSource, load_images, load_masks, open_dataset, read_image, read_mask
from saltseg.errors import DataError
from saltseg.metrics.kaggle import SMALL_SALT_CLASS, coverage, coverage_class_of


@dataclass
class LabelledTiles:
    """Labelled tiles of a dataset: ids, depths, and (when cached) pixels and masks."""

    source: TileSource
    ids: list[str]
    images: np.ndarray | None
    masks: np.ndarray | None

    @classmethod
    def load(cls, data_dir: str | Path, cache: bool = True, skip_missing: bool = False) -> LabelledTiles:
        """Find the labelled tiles of ``data_dir``; read them all into memory when ``cache``.

        A mask without its image, or (Kaggle layout) a training image without its mask, is an error
        naming the first ones: training would silently lose those tiles. ``skip_missing`` trains on the
        complete tiles only.
        """
        src = open_dataset(data_dir)
        if not src.labelled_ids:
            raise DataError("no labelled tiles (images with masks) found", data_dir)
        missing = [f"{i} (no image)" for i in src.orphan_masks]
        if src.layout == "kaggle":
            missing += [f"{i} (no mask)" for i in src.images_without_masks]
        if missing and not skip_missing:
            raise DataError(
                f"{len(missing)} training tile(s) lack their image or mask "
                f"(first: {', '.join(missing[:3])}); restore them, or train on the complete tiles only "
                "with --skip-missing (data.skip_missing=true)",
                data_dir,
            )
        ids = list(src.labelled_ids)
        images = masks = None
        if cache:
            images = load_images([src.image_path(i) for i in ids])
            masks = load_masks([src.mask_path(i) for i in ids])
        return cls(src, ids, images, masks)

    def arrays(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images and boolean masks of the tiles ``idx``, from the cache or read from disk."""
        if self.images is not None and self.masks is not None:
            return self.images[idx], self.masks[idx]
        ids = [self.ids[i] for i in idx]
        images = load_images([self.source.image_path(i) for i in ids])
        return images, load_masks([self.source.mask_path(i) for i in ids])

    def coverages(self) -> np.ndarray:
        """Salt coverage of every tile."""
        if self.masks is not None:
            return coverage(self.masks)
        return np.array([read_mask(self.source.mask_path(i)).mean() for i in self.ids])

    def pixel_stats(self, idx: np.ndarray) -> tuple[float, float]:
        """Mean and std of image/255 over the tiles ``idx`` (for standardisation)."""
        if self.images is not None:
            x = self.images[idx].astype(np.float64) / 255.0
        else:
            x = (
                load_images([self.source.image_path(self.ids[i]) for i in idx[:2000]]).astype(np.float64)
                / 255
            )
        return float(x.mean()), float(max(x.std(), 1e-3))


def folds_for(data_dir: str | Path, k: int = 5, by: str = "depth", seed: int = 0) -> dict[str, int]:
    """The K-fold assignment of the labelled tiles of ``data_dir``."""
    tiles = LabelledTiles.load(data_dir, cache=by in ("coverage", "depth_coverage"), skip_missing=True)
    depths = tiles.source.depth_array(tiles.ids) if tiles.source.depths else None
    cov = tiles.coverages() if by in ("coverage", "depth_coverage") else None
    return make_folds(tiles.ids, k=k, by=by, depths=depths, coverages=cov, seed=seed)  # type: ignore[arg-type]


Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class TileDataset(Dataset):
    """Tiles as ``(image (1,H,W) float in [0,1], mask (1,H,W) float in [0,1])``, optionally augmented.

    Holds arrays in memory, or reads each PNG on access when given paths (lazy mode). Boolean masks give
    {0, 1} targets; uint8 masks are soft targets ``p * 255`` (a teacher's probabilities, distillation).
    """

    def __init__(
        self,
        images: np.ndarray | list[Path],
        masks: np.ndarray | list[Path],
        transform: Transform | None = None,
    ) -> None:
        if len(images) != len(masks):
            raise ValueError("images and masks differ in length")
        self.images, self.masks, self.transform = images, masks, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.images[i]
        msk = self.masks[i]
        if isinstance(img, Path):
            img = read_image(img)
        if isinstance(msk, Path):
            msk = read_mask(msk)
        x = torch.from_numpy(np.ascontiguousarray(img)).float().div_(255.0)[None]
        y = torch.from_numpy(np.ascontiguousarray(msk)).float()[None]
        if msk.dtype == np.uint8:
            y = y.div_(255.0)
        if self.transform is not None:
            x, y = self.transform(x, y)
        return x, y


def load_pseudo_labels(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a pseudo-label dataset written by ``saltseg pseudo`` (images/ + masks/ folders).

    Masks are boolean, or with ``"soft": true`` in its ``pseudo.json`` the teacher's probabilities as
    uint8 ``p * 255`` (soft targets for distillation).
    """
    import json

    src = open_dataset(folder)
    if not src.labelled_ids:
        raise DataError("no pseudo-labelled tiles found (expected images/ and masks/)", folder)
    images = load_images([src.image_path(i) for i in src.labelled_ids])
    info_file = Path(folder) / names.PSEUDO_FILE
    try:
        soft = bool(json.loads(info_file.read_text()).get("soft")) if info_file.exists() else False
    except (OSError, ValueError, AttributeError):
        raise DataError("not a readable pseudo.json", info_file) from None
    if soft:  # probabilities as grey levels: read as images, not as binary masks
        return images, load_images([src.mask_path(i) for i in src.labelled_ids])
    return images, load_masks([src.mask_path(i) for i in src.labelled_ids])


def small_salt_weights(coverages: np.ndarray, weight: float) -> np.ndarray:
    """Sampling weight of each tile: ``weight`` for tiles with (0, 10%] salt, 1 for all others."""
    return np.where(coverage_class_of(coverages) == SMALL_SALT_CLASS, float(weight), 1.0)


class SaltDataModule(L.LightningDataModule):
    """Train/validation loaders of one fold, with optional pseudo-labelled tiles in training.

    ``small_salt_weight`` > 1 draws each epoch's training tiles with replacement, a tile with (0, 10%] salt
    that many times as often as any other (the epoch keeps its length); 1 is a plain shuffle.
    """

    def __init__(
        self,
        tiles: LabelledTiles,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        batch_size: int,
        transform: Transform | None,
        num_workers: int = 0,
        pseudo: tuple[np.ndarray, np.ndarray] | None = None,
        small_salt_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.tiles, self.train_idx, self.val_idx = tiles, train_idx, val_idx
        self.batch_size, self.transform, self.num_workers = batch_size, transform, num_workers
        self.pseudo = pseudo
        self.use_pseudo = pseudo is not None
        self.small_salt_weight = small_salt_weight

    def _subset(self, idx: np.ndarray, transform: Transform | None) -> TileDataset:
        t = self.tiles
        if t.images is not None and t.masks is not None:
            return TileDataset(t.images[idx], t.masks[idx], transform)
        return TileDataset(
            [t.source.image_path(t.ids[i]) for i in idx],
            [t.source.mask_path(t.ids[i]) for i in idx],
            transform,
        )

    def train_dataset(self) -> Dataset:
        """Training tiles of the fold (plus pseudo-labels when in use)."""
        ds: Dataset = self._subset(self.train_idx, self.transform)
        if self.use_pseudo and self.pseudo is not None:
            ds = ConcatDataset([ds, TileDataset(self.pseudo[0], self.pseudo[1], self.transform)])
        return ds

    def val_dataset(self) -> TileDataset:
        """Validation tiles of the fold (never augmented, never pseudo-labelled)."""
        return self._subset(self.val_idx, None)

    def train_coverages(self) -> np.ndarray:
        """Salt coverage of each training tile, in :meth:`train_dataset`'s order (soft masks cut at 0.5)."""
        covs = [self.tiles.coverages()[self.train_idx]]
        if self.use_pseudo and self.pseudo is not None:
            masks = self.pseudo[1]
            covs.append(coverage(masks > 127 if masks.dtype == np.uint8 else masks))
        return np.concatenate(covs)

    def train_sampler(self) -> WeightedRandomSampler | None:
        """The weighted sampler of the training tiles, or None (a plain shuffle) at weight 1."""
        if self.small_salt_weight == 1.0:
            return None
        weights = small_salt_weights(self.train_coverages(), self.small_salt_weight)
        return WeightedRandomSampler(torch.from_numpy(weights), num_samples=len(weights), replacement=True)

    def train_dataloader(self) -> DataLoader:
        sampler = self.train_sampler()
        return DataLoader(
            self.train_dataset(),
            batch_size=self.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_dataset(),
            batch_size=self.batch_size * 2,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
