"""Property-based tests (hypothesis): manifest parsers round-trip what was written, pad/crop and
training batches keep their shapes and contents, the group split is a function of the groups.

(test_datasets.py already checks that group_split keeps groups whole, is deterministic and leaves
every class a training group; the split properties here are the ones it does not check.)
"""

from __future__ import annotations

import csv
import io
import tempfile
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sceneclf.data.audio import crop, fit_length
from sceneclf.data.manifest import group_split, load_manifest
from sceneclf.data.melset import MelSet, batches
from sceneclf.errors import DataError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text a user may put in a manifest field: any printable unicode, no control characters
# (tabs and line breaks included), and not only whitespace.
field_text = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)
labels = field_text.filter(lambda s: s.strip())
file_names = (st.text(st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="/\\"),
                      min_size=1, max_size=16)
              .map(str.strip)
              .filter(lambda s: s not in ("", ".", "..") and len(s.encode()) < 200))


def nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s.strip())


# ---------------------------------------------------------------- manifest parsers

@FAST
@given(rows=st.lists(st.tuples(file_names, labels, st.one_of(st.none(), labels)), min_size=1,
                     max_size=10, unique_by=lambda r: r[0]),
       newline=st.sampled_from(["\n", "\r\n"]), bom=st.booleans(), repeat=st.booleans(),
       seed=st.integers(0, 2**16))
def test_csv_manifest_round_trip(rows, newline, bom, repeat, seed):
    """Whatever labels, groups and file names are written (csv-quoted), each clip reads back with
    its label and group (trimmed, NFC); exact duplicate rows collapse; every class can train."""
    with_group = any(g is not None for _, _, g in rows)
    rows = [(f, lab, g if g is not None else "x") if with_group else (f, lab, None) for f, lab, g in rows]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, _, _ in rows:
            (root / name).write_bytes(b"")  # the manifest is read without decoding audio
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator=newline)
        writer.writerow(["path", "label", "group"] if with_group else ["path", "label"])
        written = rows + (rows[:3] if repeat else [])
        writer.writerows([r if with_group else r[:2] for r in written])
        (root / "manifest.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode())
        try:
            manifest = load_manifest(root, layout="csv", seed=seed)  # a clip may be named meta.csv
        except DataError as exc:
            # only possible when a label is only ever a minority in groups that left training
            message = str(exc)
            assert "\n" not in message and "manifest.csv" in message and "training split" in message
            assume(False)
        by_path = {c.path.name: c for c in manifest.clips}
        assert len(manifest.clips) == len(rows)
        for name, label, group in rows:
            clip = by_path[name]
            assert clip.label == nfc(label)
            if with_group:
                assert clip.group == nfc(group)
        assert manifest.classes == tuple(sorted({nfc(lab) for _, lab, _ in rows}))
        assert {c.label for c in manifest.clips if c.split == "train"} == set(manifest.classes)


# DCASE meta files are read with Python's csv rules (tab-delimited): a field starting with a double
# quote is a quoted field. Written unquoted, fields must not start with one.
tut_labels = labels.filter(lambda s: not s.strip().startswith('"'))


@FAST
@given(rows=st.lists(st.tuples(st.integers(0, 9999), tut_labels, tut_labels), min_size=1, max_size=10,
                     unique_by=lambda r: r[0]),
       newline=st.sampled_from(["\n", "\r\n"]))
def test_tut_meta_round_trip(rows, newline):
    """TUT 2017 meta.txt (tab-separated, no header): labels and locations read back as written."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "audio").mkdir()
        lines = []
        for n, label, location in rows:
            (root / "audio" / f"{n}.wav").write_bytes(b"")
            lines.append(f"audio/{n}.wav\t{label}\t{location}")
        (root / "meta.txt").write_bytes((newline.join(lines) + newline).encode())
        try:
            manifest = load_manifest(root, layout="tut2017")
        except DataError as exc:
            assert "\n" not in str(exc) and "meta.txt" in str(exc) and "training split" in str(exc)
            assume(False)
        assert manifest.layout == "tut2017"
        got = {c.path.name: (c.label, c.group) for c in manifest.clips}
        assert got == {f"{n}.wav": (nfc(label), nfc(location)) for n, label, location in rows}


# ---------------------------------------------------------------- pad and crop

@FAST
@given(n=st.integers(1, 3000), min_samples=st.integers(1, 1000), extra=st.integers(0, 1000))
def test_fit_length_pads_and_crops_centred(n, min_samples, extra):
    max_samples = min_samples + extra
    wave = np.arange(1, n + 1, dtype=np.float64)  # nonzero, distinct: where each sample went shows
    out = fit_length(wave, min_samples, max_samples)
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    assert len(out) == min(max(n, min_samples), max_samples)
    if n < min_samples:
        left = (min_samples - n) // 2
        assert np.array_equal(out[left:left + n], wave.astype(np.float32))
        assert not out[:left].any() and not out[left + n:].any()
        assert abs(left - (min_samples - n - left)) <= 1
    elif n > max_samples:
        start = (n - max_samples) // 2
        assert np.array_equal(out, wave[start:start + max_samples].astype(np.float32))
        assert abs(start - (n - max_samples - start)) <= 1
    else:
        assert np.array_equal(out, wave.astype(np.float32))


@FAST
@given(n=st.integers(1, 500), length=st.integers(1, 500), lead=st.integers(0, 3), data=st.data())
def test_crop_always_gives_the_length(n, length, lead, data):
    wave = torch.arange(1, n + 1, dtype=torch.float32).expand(*([2] * lead), n)
    if n >= length:
        offset = data.draw(st.one_of(st.none(), st.integers(0, n - length)))
        out = crop(wave, length, offset)
        start = (n - length) // 2 if offset is None else offset
        assert torch.equal(out, wave[..., start:start + length])
        bad = data.draw(st.one_of(st.integers(-50, -1), st.integers(n - length + 1, n + 50)))
        with pytest.raises(ValueError):
            crop(wave, length, bad)
    else:
        out = crop(wave, length)
        left = (length - n) // 2
        assert torch.equal(out[..., left:left + n], wave)
        assert out.sum() == wave.sum()
    assert out.shape == (*wave.shape[:-1], length)


@FAST
@given(lengths=st.lists(st.integers(1, 40), min_size=0, max_size=12), batch_size=st.integers(1, 5),
       frames=st.integers(1, 20), train=st.booleans(), seed=st.integers(0, 100))
def test_batches_shapes_and_contents(lengths, batch_size, frames, train, seed):
    """Every clip once per pass, in full-size batches (but the last) of (n_mels, frames) crops of
    itself: in order with centre crops in evaluation, shuffled with random crops in training;
    shorter clips padded with zeros at the end."""
    n_mels = 3
    # mel i holds 1000 * (i + 1) + column: a crop shows which clip and which columns it came from
    mels = [(1000.0 * (i + 1) + torch.arange(t, dtype=torch.float32)).expand(n_mels, t)
            for i, t in enumerate(lengths)]
    data = MelSet(mels, torch.arange(len(lengths)))
    out = list(batches(data, batch_size, frames, train, torch.Generator().manual_seed(seed)))
    assert [len(y) for _, y in out] == [min(batch_size, len(lengths) - s)
                                        for s in range(0, len(lengths), batch_size)]
    seen = torch.cat([y for _, y in out]).tolist() if out else []
    assert sorted(seen) == list(range(len(lengths)))
    if not train:
        assert seen == list(range(len(lengths)))
    for x, y in out:
        assert x.shape == (len(y), n_mels, frames) and x.dtype == torch.float32
        for row, i in zip(x, y.tolist()):
            t = lengths[i]
            assert torch.equal(row[0], row[-1])  # all bands cropped alike
            if t <= frames:
                assert torch.equal(row[0, :t], mels[i][0]) and not row[0, t:].any()
                continue
            offset = int(row[0, 0].item()) - 1000 * (i + 1)
            assert 0 <= offset <= t - frames
            if not train:
                assert offset == (t - frames) // 2
            assert torch.equal(row, mels[i][:, offset:offset + frames])


# ---------------------------------------------------------------- group split

groupings = st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 12)), min_size=1, max_size=80)
fraction = st.floats(0, 0.45)


@settings(max_examples=150, deadline=None)
@given(pairs=groupings, seed=st.integers(0, 2**32), test=fraction, val=fraction, shuffle=st.randoms())
def test_group_split_depends_on_groups_not_on_order(pairs, seed, test, val, shuffle):
    labels = [lab for lab, _ in pairs]
    groups = [f"g{g}" for _, g in pairs]
    out = group_split(labels, groups, {"test": test, "val": val}, seed)
    order = list(range(len(pairs)))
    shuffle.shuffle(order)
    again = group_split([labels[k] for k in order], [groups[k] for k in order], {"test": test, "val": val}, seed)
    assert {groups[k]: s for k, s in zip(order, again)} == dict(zip(groups, out))


@settings(max_examples=150, deadline=None)
@given(pairs=groupings, seed=st.integers(0, 2**32), test=fraction, val=fraction)
def test_group_split_gives_each_split_its_share(pairs, seed, test, val):
    """Per class (over the groups it is the majority of): test, then val, get at least their share
    of clips, unless only one group was left for training; nothing is held out without need."""
    labels = [lab for lab, _ in pairs]
    groups = [f"g{g}" for _, g in pairs]
    out = group_split(labels, groups, {"test": test, "val": val}, seed)
    split_of = dict(zip(groups, out))
    size = Counter(groups)
    members = defaultdict(list)
    for lab, g in zip(labels, groups):
        members[g].append(lab)
    owned = defaultdict(list)
    for g, labs in members.items():
        counts = Counter(labs)
        owned[min(counts, key=lambda lab: (-counts[lab], lab))].append(g)
    for gs in owned.values():
        total = sum(size[g] for g in gs)
        got = {s: sum(size[g] for g in gs if split_of[g] == s) for s in ("train", "val", "test")}
        train_groups = [g for g in gs if split_of[g] == "train"]
        assert train_groups
        starved = len(train_groups) == 1
        assert got["test"] >= test * total - 1e-9 or starved
        assert got["val"] >= val * total - 1e-9 or starved
        if test == 0:
            assert got["test"] == 0
        if val == 0:
            assert got["val"] == 0
