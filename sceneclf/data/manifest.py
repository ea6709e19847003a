"""Read a data set layout into a `Manifest` of labelled clips with train/val/test splits.

Official folds are used where the data set has them (DCASE/TUT/TAU evaluation setups, ESC-50,
UrbanSound8K); everything else is split by `group_split`, which keeps every recording group
(location, source recording) on one side only. Only text files are read and folders listed:
decoding audio is `sceneclf.data.audio`'s job.

Example:
    manifest = load_manifest(Path("data/TUT-acoustic-scenes-2017-development"), fold=2)
    train = manifest.subset("train")
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sceneclf.data import layouts as _layouts
from sceneclf.errors import ConfigError, DataError

__all__ = ["LAYOUTS", "SPLITS", "Clip", "Manifest", "detect_layout", "group_split", "load_manifest"]

SPLITS = ("train", "val", "test")
LAYOUTS = ("tut2017", "tut2016", "tau2019", "esc50", "urbansound8k", "csv", "folders")


@dataclass(frozen=True)
class Clip:
    path: Path          # absolute, resolved path of the audio file
    label: str
    group: str          # recording location / source id; never on two sides of a split
    split: str | None   # "train" | "val" | "test" | None (not yet assigned)


@dataclass(frozen=True)
class Manifest:
    root: Path                  # the data folder, resolved
    layout: str                 # one of LAYOUTS
    clips: tuple[Clip, ...]     # sorted by path
    classes: tuple[str, ...]    # sorted unique labels

    def subset(self, split: str) -> Manifest:
        """The clips of one split, with the same `classes` (so label indices agree)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        clips = tuple(c for c in self.clips if c.split == split)
        return Manifest(self.root, self.layout, clips, self.classes)

    def labels(self) -> list[int]:
        """Each clip's class index into `classes`."""
        index = {name: i for i, name in enumerate(self.classes)}
        return [index[c.label] for c in self.clips]


def detect_layout(root: Path) -> str:
    """The layout of the data under `root` (a folder, or a `.csv` manifest file)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such data folder or manifest file")
    if root.is_file() and root.suffix.lower() != ".csv":
        raise DataError(f"{root}: not a data folder or a .csv manifest")
    layout = _layouts.guess(root)
    if layout is None:
        raise DataError(f"{root}: no known data set layout found "
                        f"(understood layouts: {', '.join(LAYOUTS)})")
    return layout


def load_manifest(root: Path, layout: str | None = None, fold: int = 1,
                  val_fraction: float = 0.2, test_fraction: float = 0.2,
                  seed: int = 0) -> Manifest:
    """Read the data set under `root`; every clip of the result has its split assigned.

    `layout` forces a layout instead of detecting one. `fold` picks an official fold where
    the data set has folds (for the others it must be 1). For DCASE layouts with an
    evaluation setup, test is the fold's evaluate list and val its validate list or, without
    one, a group split of `val_fraction` of its train list; a CSV manifest whose split column
    has no val rows is treated the same way. Layouts without official splits are group-split with
    `test_fraction` and `val_fraction`, seeded by `seed`.
    """
    _check_options(layout, fold, val_fraction, test_fraction)
    root = Path(root).expanduser()
    if layout is None:
        layout = detect_layout(root)
    elif not root.exists():
        raise DataError(f"{root}: no such data folder or manifest file")
    elif not _layouts.matches(root, layout):
        seen = _layouts.guess(root)
        looks = f"the files look like {seen}" if seen else "no known layout found there"
        raise DataError(f"{root}: --layout {layout} needs {_layouts.MARKERS[layout]}, "
                        f"not found ({looks})")
    root = root.resolve() if root.is_dir() else root.absolute()
    listing = _layouts.READERS[layout](root, fold, layout)
    items = sorted(listing.items, key=lambda item: item.path)
    if not items:
        raise DataError(f"{listing.source}: no clips listed")

    splits = [item.split for item in items]
    if all(s is None for s in splits):
        splits = group_split([i.label for i in items], [i.group for i in items],
                             {"test": test_fraction, "val": val_fraction}, seed)
    elif listing.carve_val:
        pool = [k for k, s in enumerate(splits) if s == "train"]
        carved = group_split([items[k].label for k in pool], [items[k].group for k in pool],
                             {"val": val_fraction}, seed)
        for k, split in zip(pool, carved):
            splits[k] = split

    clips = tuple(Clip(i.path, i.label, i.group, s) for i, s in zip(items, splits))
    classes = tuple(sorted({c.label for c in clips}))
    trained = {c.label for c in clips if c.split == "train"}
    for name in classes:
        if name not in trained:
            count = sum(c.label == name for c in clips)
            raise DataError(f"{listing.source}: class {name!r} has no clips in the training "
                            f"split (all {count} are in val/test)")
    return Manifest(listing.root, layout, clips, classes)


def group_split(labels: Sequence[str], groups: Sequence[str], fractions: dict[str, float],
                seed: int) -> list[str]:
    """One split name per item: seeded, stratified by class, whole groups only.

    `fractions` maps "test" and/or "val" to the share of each class's clips they should get
    (at least); the rest is "train". Each group belongs to its majority class (ties go to the
    first label in sorted order). Per class, its groups are shuffled and handed whole to test,
    then val, until each has its share; one group always stays in train, so a class with a
    single group goes to train entirely. The same inputs and seed give the same result.
    """
    if len(labels) != len(groups):
        raise ValueError(f"{len(labels)} labels but {len(groups)} groups")
    unknown = set(fractions) - {"test", "val"}
    if unknown:
        raise ValueError(f"fractions for unknown splits: {sorted(unknown)}")
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for label, group in zip(labels, groups):
        counts[group][label] += 1
    size = {group: sum(by_label.values()) for group, by_label in counts.items()}
    owned: dict[str, list[str]] = defaultdict(list)
    for group, by_label in counts.items():
        owner = min(by_label, key=lambda label: (-by_label[label], label))
        owned[owner].append(group)

    assigned: dict[str, str] = {}
    for label in sorted(owned):
        pool = sorted(owned[label])
        random.Random(f"{seed}/{label}").shuffle(pool)
        total = sum(size[g] for g in pool)
        for split in ("test", "val"):
            want, got = fractions.get(split, 0.0) * total, 0
            while got < want - 1e-9 and len(pool) > 1:
                group = pool.pop()
                assigned[group] = split
                got += size[group]
        assigned.update((group, "train") for group in pool)
    return [assigned[group] for group in groups]


def _check_options(layout: str | None, fold: int, val_fraction: float,
                   test_fraction: float) -> None:
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"--layout {layout!r}: unknown layout "
                          f"(understood layouts: {', '.join(LAYOUTS)})")
    if isinstance(fold, bool) or not isinstance(fold, int) or fold < 1:
        raise ConfigError(f"--fold {fold!r}: must be a whole number from 1")
    # DataConfig fields, not options: the CLI keeps the default fractions.
    for field, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ConfigError(f"DataConfig.{field} {value}: must be at least 0 and below 1")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(f"DataConfig.val_fraction {val_fraction} + test_fraction {test_fraction}: "
                          f"must sum to below 1 (nothing left to train on)")
