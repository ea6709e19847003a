"""Readers for each data set layout: text tables in, resolved (path, label, group, split) out.

Private to `sceneclf.data.manifest`. Every reader takes the data folder (or, for `csv`, possibly a
`.csv` file) and the fold number, and returns a `Listing`. Nothing here decodes audio: files are
only checked to exist and to stay inside the data folder.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from sceneclf.errors import ConfigError, DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "valid": "val",
               "eval": "val", "evaluate": "val", "test": "test"}


class Item(NamedTuple):
    path: Path          # absolute, resolved
    label: str
    group: str
    split: str | None


class Listing(NamedTuple):
    root: Path          # the data folder, resolved
    source: Path        # the file (or folder) the clips were listed in, for messages
    items: list[Item]
    carve_val: bool     # True: "train" items still hold the validation share


class Row(NamedTuple):
    where: str          # "<file> line <n>", for messages
    listed: str         # the path exactly as listed
    label: str
    group: str | None   # None: derive from the file name
    split: str | None


# ---------------------------------------------------------------- text tables

def read_table(path: Path, columns: Iterable[str], optional: Iterable[str] = (), *,
               header: bool = True, delimiter: str = ",") -> list[tuple[int, dict[str, str]]]:
    """Rows of a text table as (line number, {column: value}).

    Tolerates a UTF-8 BOM, CRLF line endings, blank lines and whitespace around values.
    With `header`, columns are found by name (case-insensitive); otherwise by position in
    `columns + optional`. Required columns must be present with a value on every row;
    optional columns with an empty value are left out of the row's dict.
    """
    columns, optional = list(columns), list(optional)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {err.start})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    rows = [(n, [f.strip() for f in next(csv.reader([line], delimiter=delimiter))])
            for n, line in enumerate(lines, 1) if line.strip()]
    if header:
        if not rows:
            raise DataError(f"{path}: empty file (expected a header row)")
        names = [f.lower() for f in rows.pop(0)[1]]
        for col in columns:
            if col.lower() not in names:
                raise DataError(f"{path}: missing column {col!r} (header has: {', '.join(names)})")
        index = {c: names.index(c.lower()) for c in columns + optional if c.lower() in names}
    else:
        index = {c: i for i, c in enumerate(columns + optional)}
    table = []
    for n, fields in rows:
        row = {c: fields[i] for c, i in index.items() if i < len(fields) and fields[i]}
        for i, col in enumerate(columns):
            if col not in row:
                what = f"column {col!r}" if header else f"column {i + 1} ({col})"
                raise DataError(f"{path} line {n}: missing {what}")
        table.append((n, row))
    return table


# ---------------------------------------------------------------- paths and clips

def file_group(listed: str) -> str:
    """Recording group from a file name: the part before the first `_`, else the file itself."""
    name = listed.rsplit("/", 1)[-1]
    return name.split("_", 1)[0] if "_" in name.strip("_") else listed


def resolve_rows(root: Path, rows: Iterable[Row]) -> list[tuple[Row, Item]]:
    """Resolve listed paths inside `root` (resolved); drop exact duplicates; reject conflicts.

    Returns (first row, item) pairs, one per distinct file. Raises DataError for a path
    escaping `root`, a missing file, or one path listed with two labels, groups or splits.
    """
    root = root.resolve()
    seen: dict[Path, tuple[Row, Item]] = {}
    missing: list[Row] = []
    for row in rows:
        listed = row.listed.replace("\\", "/")
        path = Path(listed) if Path(listed).is_absolute() else root / listed
        path = path.resolve()
        if not path.is_relative_to(root):
            raise DataError(f"{row.where}: {row.listed!r} escapes the data folder {root}")
        if not path.is_file():
            missing.append(row)
            continue
        label = unicodedata.normalize("NFC", row.label)
        group = unicodedata.normalize("NFC", row.group or file_group(listed))
        item = Item(path, label, group, row.split)
        if path in seen:
            first_row, first = seen[path]
            for field in ("label", "group", "split"):
                a, b = getattr(first, field), getattr(item, field)
                if a != b:
                    raise DataError(f"{row.where}: {row.listed!r} is listed with two {field}s "
                                    f"({a!r} at {first_row.where}, {b!r} here)")
            continue
        seen[path] = (row, item)
    if missing:
        more = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise DataError(f"{missing[0].where}: listed file {missing[0].listed!r} "
                        f"does not exist{more}")
    return list(seen.values())


def class_dirs(root: Path) -> list[Path]:
    """Visible sub-folders of `root` holding at least one audio file."""
    if not root.is_dir():
        return []
    return [d for d in sorted(root.iterdir())
            if d.is_dir() and not d.name.startswith(".") and audio_files(d)]


def audio_files(folder: Path) -> list[Path]:
    return [f for f in sorted(folder.iterdir()) if f.suffix.lower() in AUDIO_SUFFIXES
            and not f.name.startswith(".") and f.is_file()]


def _no_folds(layout: str, root: Path, fold: int) -> None:
    if fold != 1:
        raise ConfigError(f"--fold {fold}: {layout} data in {root} has no official folds; "
                          f"only --fold 1 applies")


def _check_fold(fold: int, valid: list[int], what: str) -> None:
    if fold not in valid:
        span = (f"{valid[0]}-{valid[-1]}" if valid == list(range(valid[0], valid[-1] + 1))
                else ", ".join(map(str, valid)))
        raise ConfigError(f"--fold {fold}: {what} has folds {span}")


# ---------------------------------------------------------------- DCASE (TUT / TAU)

def _read_dcase(root: Path, fold: int, layout: str) -> Listing:
    """tut2017 / tut2016 (`meta.txt`, no header) and tau2019 (`meta.csv`, header).

    A fold lists its clips in `foldN_train` and `foldN_evaluate` (test); an optional
    `foldN_validate` lists validation clips, which are otherwise carved from `foldN_train`."""
    tau = layout == "tau2019"
    meta = root / ("meta.csv" if tau else "meta.txt")
    ext, header = (".csv", True) if tau else (".txt", False)
    names = ("filename", "scene_label") if tau else ("file", "label")
    cols = names if layout == "tut2016" else names + ("identifier" if tau else "location",)
    table = read_table(meta, cols, header=header, delimiter="\t")
    rows = [Row(f"{meta} line {n}", r[cols[0]], r[cols[1]],
                r.get(cols[2]) if len(cols) > 2 else None, None) for n, r in table]
    items = [item for _, item in resolve_rows(root, rows)]

    setup = root / "evaluation_setup"
    folds = sorted(int(m[1]) for f in (setup.glob(f"fold*_train{ext}") if setup.is_dir() else [])
                   if (m := re.fullmatch(rf"fold(\d+)_train{re.escape(ext)}", f.name)))
    if not folds:
        _no_folds(layout, root, fold)
        return Listing(root, meta, items, carve_val=False)
    _check_fold(fold, folds, f"{setup}")
    by_path = {item.path: item for item in items}
    chosen: dict[Path, Item] = {}
    validate = setup / f"fold{fold}_validate{ext}"
    for split, name in (("train", "train"), ("val", "validate"), ("test", "evaluate")):
        lst = setup / f"fold{fold}_{name}{ext}"
        if split == "val" and not validate.is_file():
            continue
        table = read_table(lst, names[:1], names[1:], header=header, delimiter="\t")
        listed = [Row(f"{lst} line {n}", r[names[0]], r.get(names[1], ""), None, split)
                  for n, r in table]
        for row, item in resolve_rows(root, listed):
            known = by_path.get(item.path)
            if known is None:
                raise DataError(f"{row.where}: {row.listed!r} is not listed in {meta}")
            if row.label and item.label != known.label:
                raise DataError(f"{row.where}: {row.listed!r} is labelled {item.label!r} here "
                                f"but {known.label!r} in {meta}")
            if item.path in chosen and chosen[item.path].split != split:
                other = {"train": "train", "val": "validate", "test": "evaluate"}[chosen[item.path].split]
                raise DataError(f"{row.where}: {row.listed!r} is in both the {other} and "
                                f"{name} lists of fold {fold}")
            chosen[item.path] = known._replace(split=split)
    return Listing(root, meta, list(chosen.values()), carve_val=not validate.is_file())


# ---------------------------------------------------------------- ESC-50, UrbanSound8K

def _read_folded(root: Path, fold: int, layout: str) -> Listing:
    if layout == "esc50":
        meta, n_folds = root / "meta" / "esc50.csv", 5
        cols = ("filename", "fold", "category", "src_file")
    else:
        meta, n_folds = root / "metadata" / "UrbanSound8K.csv", 10
        cols = ("slice_file_name", "fold", "class", "fsID")
    _check_fold(fold, list(range(1, n_folds + 1)), layout)
    val_fold = fold % n_folds + 1
    rows = []
    for n, r in read_table(meta, cols):
        where, f = f"{meta} line {n}", r["fold"]
        if not (f.isdecimal() and 1 <= int(f) <= n_folds):
            raise DataError(f"{where}: fold {f!r} is not a whole number from 1 to {n_folds}")
        split = "test" if int(f) == fold else "val" if int(f) == val_fold else "train"
        listed = (f"audio/{r['filename']}" if layout == "esc50"
                  else f"audio/fold{int(f)}/{r['slice_file_name']}")
        rows.append(Row(where, listed, r[cols[2]], r[cols[3]], split))
    return Listing(root, meta, [item for _, item in resolve_rows(root, rows)], carve_val=False)


# ---------------------------------------------------------------- generic CSV, folders

def _read_csv(root: Path, fold: int, layout: str) -> Listing:
    source = root if root.suffix.lower() == ".csv" and root.is_file() else root / "manifest.csv"
    folder = source.parent.resolve()
    _no_folds(layout, folder, fold)
    first = _first_data_line(source)
    table = read_table(source, ("path", "label"), ("group", "split"),
                       delimiter="\t" if first.count("\t") > first.count(",") else ",")
    rows = []
    for n, r in table:
        where, split = f"{source} line {n}", r.get("split")
        if split is not None:
            split = SPLIT_NAMES.get(split.lower())
            if split is None:
                raise DataError(f"{where}: unknown split {r['split']!r} "
                                f"(expected train, val or test)")
        rows.append(Row(where, r["path"], r["label"], r.get("group"), split))
    given = [row for row in rows if row.split is not None]
    if given and len(given) < len(rows):
        blank = next(row for row in rows if row.split is None)
        raise DataError(f"{blank.where}: no value in column 'split', which other rows fill")
    pairs = resolve_rows(folder, rows)
    items = [item for _, item in pairs]
    sides: dict[str, str] = {}
    for row, item in pairs:
        if row.group is not None and item.split is not None:
            other = sides.setdefault(item.group, item.split)
            if other != item.split:
                raise DataError(f"{row.where}: group {item.group!r} is in both "
                                f"{other} and {item.split}")
    carve = bool(given) and not any(item.split == "val" for item in items)
    return Listing(folder, source, items, carve_val=carve)


def _read_folders(root: Path, fold: int, layout: str) -> Listing:
    _no_folds(layout, root, fold)
    dirs = class_dirs(root)
    if not dirs:
        raise DataError(f"{root}: no class sub-folders with audio files "
                        f"({', '.join(AUDIO_SUFFIXES)})")
    rows = [Row(str(f), f.relative_to(root).as_posix(), d.name, None, None)
            for d in dirs for f in audio_files(d)]
    return Listing(root, root, [item for _, item in resolve_rows(root, rows)], carve_val=False)


# ---------------------------------------------------------------- detection

MARKERS = {"tut2017": "meta.txt", "tut2016": "meta.txt", "tau2019": "meta.csv",
           "esc50": "meta/esc50.csv", "urbansound8k": "metadata/UrbanSound8K.csv",
           "csv": "manifest.csv", "folders": "one sub-folder of audio files per class"}

READERS: dict[str, Callable[[Path, int, str], Listing]] = {
    "tut2017": _read_dcase, "tut2016": _read_dcase, "tau2019": _read_dcase,
    "esc50": _read_folded, "urbansound8k": _read_folded,
    "csv": _read_csv, "folders": _read_folders,
}


def guess(root: Path) -> str | None:
    """The layout the files under `root` look like, or None."""
    if root.is_file():
        return "csv" if root.suffix.lower() == ".csv" else None
    for layout in ("esc50", "urbansound8k", "tau2019"):
        if (root / MARKERS[layout]).is_file():
            return layout
    if (root / "meta.txt").is_file():
        line = _first_data_line(root / "meta.txt")
        return "tut2017" if len(line.split("\t")) >= 3 else "tut2016"
    if (root / "manifest.csv").is_file():
        return "csv"
    return "folders" if class_dirs(root) else None


def _first_data_line(path: Path) -> str:
    """The first non-blank line, stripped ("" if unreadable: `read_table` reports that)."""
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as f:
            return next((line.strip() for line in f if line.strip()), "")
    except OSError:
        return ""


def matches(root: Path, layout: str) -> bool:
    """Whether `root` has the file that `layout` needs (a forced layout is checked by this)."""
    if layout == "csv":
        return guess(root) == "csv" or (root / "manifest.csv").is_file()
    if layout == "folders":
        return bool(class_dirs(root))
    return root.is_dir() and (root / MARKERS[layout]).is_file()
