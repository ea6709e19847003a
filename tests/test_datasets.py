"""Each layout written for real into tmp_path (tiny WAV files), read back through detection."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from sceneclf.data.manifest import LAYOUTS, SPLITS, Clip, Manifest, detect_layout, group_split, load_manifest
from sceneclf.errors import ConfigError, DataError

SILENCE = np.zeros(1600, dtype="float32")  # 0.1 s at 16 kHz


def wav(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, SILENCE, 16000)
    return path


def text(path: Path, lines: list[str], *, newline: str = "\n", bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = newline.join(lines) + newline
    path.write_bytes(("\ufeff" if bom else "").encode() + data.encode("utf-8"))
    return path


def sides(manifest: Manifest) -> dict[str, set[str]]:
    """Group -> the splits it appears in."""
    out: dict[str, set[str]] = defaultdict(set)
    for clip in manifest.clips:
        out[clip.group].add(clip.split)
    return out


def assert_sound(manifest: Manifest) -> None:
    """Invariants every manifest keeps."""
    assert all(c.split in SPLITS for c in manifest.clips)
    assert all(c.path.is_absolute() and c.path.is_file() for c in manifest.clips)
    assert list(manifest.clips) == sorted(manifest.clips, key=lambda c: c.path)
    assert manifest.classes == tuple(sorted({c.label for c in manifest.clips}))
    assert {c.label for c in manifest.subset("train").clips} == set(manifest.classes)


# ---------------------------------------------------------------- layouts on disk

TUT_CLASSES = ("beach", "city center", "park")


def make_tut(root: Path, *, columns: int = 3, folds: bool = True) -> Path:
    """3 classes x 4 locations x 2 files; fold k evaluates location k-1 of every class."""
    meta, evaluate = [], defaultdict(list)
    for c, label in enumerate(TUT_CLASSES):
        for loc in range(4):
            location = f"{'bcp'[c]}{loc:03d}"
            for seg in range(2):
                rel = f"audio/{location}_{seg * 10}_{seg * 10 + 10}.wav"
                wav(root / rel)
                meta.append(f"{rel}\t{label}\t{location}" if columns == 3 else f"{rel}\t{label}")
                evaluate[loc + 1].append((rel, label))
    text(root / "meta.txt", meta)
    if folds:
        for k in range(1, 5):
            train = [f"{r}\t{lab}" for j in range(1, 5) if j != k for r, lab in evaluate[j]]
            text(root / "evaluation_setup" / f"fold{k}_train.txt", train)
            text(root / "evaluation_setup" / f"fold{k}_evaluate.txt",
                 [f"{r}\t{lab}" for r, lab in evaluate[k]])
            text(root / "evaluation_setup" / f"fold{k}_test.txt", [r for r, _ in evaluate[k]])
    return root


def test_tut2017_official_fold(tmp_path):
    root = make_tut(tmp_path / "tut")
    assert detect_layout(root) == "tut2017"
    m = load_manifest(root, fold=2)
    assert m.layout == "tut2017" and m.root == root.resolve()
    assert m.classes == TUT_CLASSES
    assert len(m.clips) == 24
    assert {c.group for c in m.subset("test").clips} == {"b001", "c001", "p001"}
    assert len(m.subset("val").clips) > 0
    assert all(len(s) == 1 for s in sides(m).values())
    assert_sound(m)
    clip = next(c for c in m.clips if c.path.name == "b002_0_10.wav")
    assert clip == Clip((root / "audio/b002_0_10.wav").resolve(), "beach", "b002", clip.split)


def test_tut2017_validate_list_is_the_val_split(tmp_path):
    """A fold's optional validate list replaces the carve: val is exactly what it lists."""
    root = make_tut(tmp_path / "tut")
    setup = root / "evaluation_setup"
    train = setup.joinpath("fold1_train.txt").read_text().splitlines()
    val = [line for line in train if "002_" in line.split("\t")[0]]  # location 2 of every class
    text(setup / "fold1_train.txt", [line for line in train if line not in val])
    text(setup / "fold1_validate.txt", val)
    m = load_manifest(root, fold=1, val_fraction=0.5, seed=7)
    assert sorted(str(c.path.relative_to(root.resolve())) for c in m.subset("val").clips) == \
        sorted(line.split("\t")[0] for line in val)
    assert {c.group for c in m.subset("test").clips} == {"b000", "c000", "p000"}
    assert len(m.subset("train").clips) == 12
    assert_sound(m)
    text(setup / "fold1_validate.txt", val + [train[0]])
    with pytest.raises(DataError, match=r"fold1_validate\.txt line 7: 'audio/b001_0_10\.wav' is in "
                                        r"both the train and validate lists of fold 1"):
        load_manifest(root)


def test_tut2017_without_setup_is_group_split(tmp_path):
    m = load_manifest(make_tut(tmp_path, folds=False), seed=3)
    assert m.layout == "tut2017"
    assert {c.split for c in m.clips} == set(SPLITS)
    assert all(len(s) == 1 for s in sides(m).values())
    assert_sound(m)
    assert m == load_manifest(tmp_path, seed=3)


def test_tut2016_location_from_file_name(tmp_path):
    root = make_tut(tmp_path, columns=2)
    assert detect_layout(root) == "tut2016"
    m = load_manifest(root, fold=4)
    assert {c.group for c in m.subset("test").clips} == {"b003", "c003", "p003"}
    assert {c.group for c in m.clips} == {f"{x}{i:03d}" for x in "bcp" for i in range(4)}
    assert_sound(m)


def test_tau2019(tmp_path):
    rows, train, evaluate = [], [], []
    for label in ("airport", "metro"):
        for city in ("barcelona", "lisbon", "paris"):
            for seg in range(2):
                ident = f"{city}-{label[0]}"
                rel = f"audio/{label}-{ident}-{seg}-a.wav"
                wav(tmp_path / rel)
                rows.append(f"{rel}\t{label}\t{ident}\ta")
                (evaluate if city == "paris" else train).append(f"{rel}\t{label}")
    text(tmp_path / "meta.csv", ["filename\tscene_label\tidentifier\tsource_label", *rows])
    setup = tmp_path / "evaluation_setup"
    text(setup / "fold1_train.csv", ["filename\tscene_label", *train])
    text(setup / "fold1_evaluate.csv", ["filename\tscene_label", *evaluate])
    text(setup / "fold1_test.csv", ["filename", *[e.split("\t")[0] for e in evaluate]])
    assert detect_layout(tmp_path) == "tau2019"
    m = load_manifest(tmp_path, val_fraction=0.3)
    assert {c.group for c in m.subset("test").clips} == {"paris-a", "paris-m"}
    assert {c.group for c in m.subset("val").clips} <= {"barcelona-a", "barcelona-m",
                                                        "lisbon-a", "lisbon-m"}
    assert len(m.subset("val").clips) == 4  # one of the two training cities per class
    assert_sound(m)
    with pytest.raises(ConfigError, match=r"--fold 2: .*evaluation_setup has folds 1-1"):
        load_manifest(tmp_path, fold=2)


def make_esc50(root: Path) -> Path:
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        for target, category in enumerate(("dog", "rain")):
            name = f"{fold}-{100 + fold}{target}-A-{target}.wav"
            wav(root / "audio" / name)
            rows.append(f"{name},{fold},{target},{category},True,{100 + fold}{target},A")
    text(root / "meta" / "esc50.csv", rows)
    return root


@pytest.mark.parametrize("fold,val", [(3, 4), (5, 1)])
def test_esc50_folds(tmp_path, fold, val):
    root = make_esc50(tmp_path)
    assert detect_layout(root) == "esc50"
    m = load_manifest(root, fold=fold)
    assert m.classes == ("dog", "rain")
    assert {c.path.name[0] for c in m.subset("test").clips} == {str(fold)}
    assert {c.path.name[0] for c in m.subset("val").clips} == {str(val)}
    assert len(m.subset("train").clips) == 6
    assert {c.group for c in m.subset("test").clips} == {f"{100 + fold}0", f"{100 + fold}1"}
    assert m.subset("test").labels() == [0, 1]
    assert_sound(m)


def test_urbansound8k_folds(tmp_path):
    rows = ["slice_file_name,fsID,start,end,salience,fold,classID,class"]
    for fold in range(1, 11):
        for cid, label in enumerate(("car_horn", "siren")):
            name = f"{fold}{cid}-{cid}-0-0.wav"
            wav(tmp_path / "audio" / f"fold{fold}" / name)
            rows.append(f"{name},{fold}{cid},0.0,0.1,1,{fold},{cid},{label}")
    text(tmp_path / "metadata" / "UrbanSound8K.csv", rows)
    assert detect_layout(tmp_path) == "urbansound8k"
    m = load_manifest(tmp_path, fold=10)
    assert {c.path.parent.name for c in m.subset("test").clips} == {"fold10"}
    assert {c.path.parent.name for c in m.subset("val").clips} == {"fold1"}
    assert len(m.subset("train").clips) == 16
    assert {c.group for c in m.subset("val").clips} == {"10", "11"}
    assert_sound(m)
    with pytest.raises(ConfigError, match=r"--fold 11: urbansound8k has folds 1-10"):
        load_manifest(tmp_path, fold=11)


def test_csv_with_groups_and_splits(tmp_path):
    rows = ["path,label,group,split"]
    for label in ("a", "b"):
        for i, split in enumerate(("train", "train", "validation", "eval", "TEST")):
            wav(tmp_path / "clips" / f"{label}{i}.wav")
            rows.append(f"clips/{label}{i}.wav,{label},{label}-g{i},{split}")
    text(tmp_path / "manifest.csv", rows)
    assert detect_layout(tmp_path) == "csv"
    m = load_manifest(tmp_path)
    assert [c.split for c in m.clips if c.label == "a"] == ["train", "train", "val", "val", "test"]
    assert m.clips[0].group == "a-g0"
    assert_sound(m)


def test_csv_file_as_root_without_group_or_split(tmp_path):
    rows = ["path,label"]
    for label in ("x", "y"):
        for rec in range(4):
            for part in range(2):
                wav(tmp_path / "data" / label / f"rec{label}{rec}_{part}.wav")
                rows.append(f"{label}/rec{label}{rec}_{part}.wav,{label}")
    wav(tmp_path / "data" / "solo.wav")
    rows.append("solo.wav,x")
    csv_file = text(tmp_path / "data" / "my list.csv", rows)
    assert detect_layout(csv_file) == "csv"
    m = load_manifest(csv_file, seed=1)
    assert m.root == (tmp_path / "data").resolve()
    assert {c.group for c in m.clips if c.label == "y"} == {f"recy{i}" for i in range(4)}
    assert next(c.group for c in m.clips if c.path.name == "solo.wav") == "solo.wav"
    assert all(len(s) == 1 for s in sides(m).values())
    assert_sound(m)


def test_csv_train_test_only_gets_val_carved(tmp_path):
    rows = ["path,label,split"]
    for label in ("a", "b"):
        for i in range(5):
            wav(tmp_path / f"{label}{i}_x.wav")
            rows.append(f"{label}{i}_x.wav,{label},{'test' if i == 0 else 'train'}")
    text(tmp_path / "manifest.csv", rows)
    m = load_manifest(tmp_path, val_fraction=0.25)
    assert len(m.subset("test").clips) == 2
    assert len(m.subset("val").clips) == 2
    assert_sound(m)


def test_folders(tmp_path):
    for label in ("forest", "office"):
        for rec in range(3):
            wav(tmp_path / label / f"{label[0]}{rec}_0.wav")
            (tmp_path / label / f"{label[0]}{rec}_1.wav").write_bytes(
                (tmp_path / label / f"{label[0]}{rec}_0.wav").read_bytes())
    os.rename(tmp_path / "office" / "o0_1.wav", tmp_path / "office" / "o0_1.WAV")
    sf.write(tmp_path / "office" / "o9.flac", SILENCE, 16000)
    (tmp_path / "office" / "notes.txt").write_text("not audio")
    wav(tmp_path / "office" / "._o0_0.wav")  # macOS resource fork: ignored
    (tmp_path / "empty").mkdir()
    assert detect_layout(tmp_path) == "folders"
    m = load_manifest(tmp_path)
    assert m.classes == ("forest", "office")
    assert len(m.clips) == 13
    assert {c.group for c in m.clips if c.label == "office"} == {"o0", "o1", "o2",
                                                                 "office/o9.flac"}
    assert all(len(s) == 1 for s in sides(m).values())
    assert_sound(m)


# ---------------------------------------------------------------- tolerance

def test_crlf_bom_blank_lines_duplicates_unicode_whitespace(tmp_path):
    rows = ["path,label,group  "]
    for label in ("café terrace", "métro", "北京 street"):
        for g in range(3):
            name = f"{label[:2]}{g}.wav"
            wav(tmp_path / name)
            rows += [f"{name},{label} ,{label}{g}", "", f"{name},{label},{label}{g}   "]
    text(tmp_path / "manifest.csv", rows, newline="\r\n", bom=True)
    m = load_manifest(tmp_path)
    assert m.classes == ("café terrace", "métro", "北京 street")
    assert len(m.clips) == 9
    assert_sound(m)


def test_tut_meta_crlf_bom_duplicates(tmp_path):
    root = make_tut(tmp_path)
    lines = (root / "meta.txt").read_text().splitlines()
    text(root / "meta.txt", lines + ["", lines[0] + "  "] + lines[:3], newline="\r\n", bom=True)
    assert detect_layout(root) == "tut2017"
    assert len(load_manifest(root).clips) == 24


def test_load_is_deterministic(tmp_path):
    root = make_tut(tmp_path, folds=False)
    assert load_manifest(root, seed=7) == load_manifest(root, seed=7)


# ---------------------------------------------------------------- errors

def simple_csv(root: Path, rows: list[str], header: str = "path,label") -> Path:
    for row in rows:
        name = row.split(",")[0]
        if name and not name.startswith(("/", "..")) and "missing" not in name:
            wav(root / name)
    return text(root / "manifest.csv", [header, *rows])


def test_error_missing_listed_file(tmp_path):
    simple_csv(tmp_path, ["a1.wav,a", "sub/missing_1.wav,a", "sub/missing_2.wav,b"])
    with pytest.raises(DataError, match=r"manifest\.csv line 3: listed file 'sub/missing_1\.wav' "
                                        r"does not exist \(and 1 more missing\)"):
        load_manifest(tmp_path)


def test_error_missing_file_in_tut_meta(tmp_path):
    root = make_tut(tmp_path)
    (root / "audio" / "p003_10_20.wav").unlink()
    with pytest.raises(DataError, match=r"meta\.txt line \d+: listed file "
                                        r"'audio/p003_10_20\.wav' does not exist"):
        load_manifest(root)


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_error_path_escapes_data_folder(tmp_path, how):
    outside = wav(tmp_path / "outside.wav")
    data = tmp_path / "data"
    listed = {"dotdot": "../outside.wav", "absolute": str(outside), "symlink": "link.wav"}[how]
    simple_csv(data, ["a.wav,a", f"{listed},b"])
    if how == "symlink":
        (data / "link.wav").unlink()
        (data / "link.wav").symlink_to(outside)
    with pytest.raises(DataError, match=r"manifest\.csv line 3: .* escapes the data folder"):
        load_manifest(data)


def test_error_symlinked_class_folder_escapes(tmp_path):
    wav(tmp_path / "elsewhere" / "x_1.wav")
    wav(tmp_path / "data" / "a" / "a_1.wav")
    (tmp_path / "data" / "b").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataError, match=r"escapes the data folder"):
        load_manifest(tmp_path / "data")


def test_inside_dotdot_is_fine(tmp_path):
    simple_csv(tmp_path, ["a/a1.wav,a", "b/b1.wav,b"])
    text(tmp_path / "manifest.csv", ["path,label", "a/../a/a1.wav,a", "b/b1.wav,b"])
    assert len(load_manifest(tmp_path).clips) == 2


def test_error_unknown_layout(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match=r"no known data set layout .*tut2017, tut2016, tau2019, "
                                        r"esc50, urbansound8k, csv, folders"):
        detect_layout(tmp_path)
    with pytest.raises(ConfigError, match=r"--layout 'dcase': unknown layout .*urbansound8k"):
        load_manifest(tmp_path, layout="dcase")
    with pytest.raises(DataError, match=r"nowhere: no such data folder"):
        load_manifest(tmp_path / "nowhere")


def test_error_forced_layout_mismatch(tmp_path):
    root = make_tut(tmp_path)
    with pytest.raises(DataError, match=r"--layout esc50 needs meta/esc50\.csv, not found "
                                        r"\(the files look like tut2017\)"):
        load_manifest(root, layout="esc50")
    with pytest.raises(DataError, match=r"--layout csv needs manifest\.csv"):
        load_manifest(root, layout="csv")
    tut16 = make_tut(tmp_path / "t16", columns=2)
    with pytest.raises(DataError, match=r"meta\.txt line 1: missing column 3 \(location\)"):
        load_manifest(tut16, layout="tut2017")


def test_error_class_without_training_clips(tmp_path):
    simple_csv(tmp_path, ["a1.wav,a,train", "a2.wav,a,val", "b1.wav,b,test"],
               header="path,label,split")
    with pytest.raises(DataError, match=r"manifest\.csv: class 'b' has no clips in the training"):
        load_manifest(tmp_path)


def test_error_empty_data_set(tmp_path):
    text(tmp_path / "manifest.csv", ["path,label", "", "  "])
    with pytest.raises(DataError, match=r"manifest\.csv: no clips listed"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("")
    with pytest.raises(DataError, match=r"manifest\.csv: empty file"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.csv").unlink()
    (tmp_path / "classless").mkdir()
    with pytest.raises(DataError, match=r"--layout folders needs one sub-folder of audio files "
                                        r"per class, not found \(no known layout found there\)"):
        load_manifest(tmp_path, layout="folders")


def test_error_missing_columns(tmp_path):
    simple_csv(tmp_path, ["a.wav,x"], header="path,class")
    with pytest.raises(DataError, match=r"manifest\.csv: missing column 'label' \(header has: "
                                        r"path, class\)"):
        load_manifest(tmp_path)
    text(tmp_path / "manifest.csv", ["path,label", "a.wav"])
    with pytest.raises(DataError, match=r"manifest\.csv line 2: missing column 'label'"):
        load_manifest(tmp_path)
    esc = make_esc50(tmp_path / "esc")
    text(esc / "meta" / "esc50.csv", ["filename,fold,target,esc10,src_file,take"])
    with pytest.raises(DataError, match=r"esc50\.csv: missing column 'category'"):
        load_manifest(esc)


def test_error_invalid_fold(tmp_path):
    with pytest.raises(ConfigError, match=r"--fold 6: esc50 has folds 1-5"):
        load_manifest(make_esc50(tmp_path / "esc"), fold=6)
    with pytest.raises(ConfigError, match=r"--fold 5: .*evaluation_setup has folds 1-4"):
        load_manifest(make_tut(tmp_path / "tut"), fold=5)
    with pytest.raises(ConfigError, match=r"--fold 0: must be a whole number from 1"):
        load_manifest(tmp_path / "tut", fold=0)
    simple_csv(tmp_path / "c", ["a.wav,a"])
    with pytest.raises(ConfigError, match=r"--fold 2: csv data .* no official folds"):
        load_manifest(tmp_path / "c", fold=2)
    text(tmp_path / "esc" / "meta" / "esc50.csv",
         ["filename,fold,target,category,esc10,src_file,take", "1-1010-A-0.wav,x,0,dog,1,1,A"])
    with pytest.raises(DataError, match=r"esc50\.csv line 2: fold 'x' is not a whole number"):
        load_manifest(tmp_path / "esc")


def test_error_same_path_two_labels(tmp_path):
    simple_csv(tmp_path, ["a.wav,a", "b.wav,b", "./a.wav,b"])
    with pytest.raises(DataError, match=r"manifest\.csv line 4: '\./a\.wav' is listed with two "
                                        r"labels \('a' at .*line 2, 'b' here\)"):
        load_manifest(tmp_path)


def test_error_fold_list_conflicts_with_meta(tmp_path):
    root = make_tut(tmp_path)
    lst = root / "evaluation_setup" / "fold1_train.txt"
    lines = lst.read_text().splitlines()
    text(lst, [lines[0].replace("\tbeach", "\tpark")] + lines[1:])
    with pytest.raises(DataError, match=r"fold1_train\.txt line 1: 'audio/b001_0_10\.wav' is "
                                        r"labelled 'park' here but 'beach' in .*meta\.txt"):
        load_manifest(root)
    wav(root / "audio" / "extra.wav")
    text(lst, lines + ["audio/extra.wav\tbeach"])
    with pytest.raises(DataError, match=r"'audio/extra\.wav' is not listed in .*meta\.txt"):
        load_manifest(root)


def test_error_bad_split_values_and_group_leak(tmp_path):
    simple_csv(tmp_path, ["a.wav,a,holdout"], header="path,label,split")
    with pytest.raises(DataError, match=r"manifest\.csv line 2: unknown split 'holdout'"):
        load_manifest(tmp_path)
    simple_csv(tmp_path, ["a.wav,a,train", "b.wav,a,"], header="path,label,split")
    with pytest.raises(DataError, match=r"manifest\.csv line 3: no value in column 'split'"):
        load_manifest(tmp_path)
    simple_csv(tmp_path, ["a.wav,a,g1,train", "b.wav,a,g1,test"], header="path,label,group,split")
    with pytest.raises(DataError, match=r"line 3: group 'g1' is in both train and test"):
        load_manifest(tmp_path)


def test_error_not_utf8_and_bad_fractions(tmp_path):
    (tmp_path / "manifest.csv").write_bytes(b"path,label\na.wav,caf\xe9\n")
    with pytest.raises(DataError, match=r"manifest\.csv: not UTF-8 text"):
        load_manifest(tmp_path)
    with pytest.raises(ConfigError, match=r"^DataConfig\.val_fraction 1\.2: must be"):
        load_manifest(tmp_path, val_fraction=1.2)
    with pytest.raises(ConfigError, match=r"^DataConfig\.val_fraction 0\.5 \+ test_fraction 0\.5"):
        load_manifest(tmp_path, val_fraction=0.5, test_fraction=0.5)


def test_fraction_errors_name_no_cli_option_that_does_not_exist():
    from sceneclf.cli import cli

    options = {o for cmd in cli.commands.values() for p in cmd.params for o in p.opts}
    with pytest.raises(ConfigError) as info:
        load_manifest(Path("."), val_fraction=2.0)
    named = [w for w in str(info.value).split() if w.startswith("--")]
    assert all(w in options for w in named), named


def test_errors_are_one_line(tmp_path):
    simple_csv(tmp_path, ["a.wav,a", "missing.wav,b"])
    with pytest.raises(DataError) as info:
        load_manifest(tmp_path)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- group_split

def test_group_split_whole_groups_and_fractions():
    labels = ["a"] * 10 + ["b"] * 10
    groups = [f"a{i // 2}" for i in range(10)] + [f"b{i // 2}" for i in range(10)]
    out = group_split(labels, groups, {"test": 0.2, "val": 0.2}, seed=0)
    for label in "ab":
        got = [s for lab, s in zip(labels, out) if lab == label]
        assert got.count("test") == 2 and got.count("val") == 2 and got.count("train") == 6
    assert group_split(labels, groups, {"test": 0.2, "val": 0.2}, seed=0) == out


def test_group_split_single_group_goes_to_train():
    assert group_split(["a", "a", "b", "b"], ["g", "g", "h", "i"], {"test": 0.5}, 0) \
        .count("train") == 3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 8)), max_size=60),
       st.integers(0, 2**32), st.floats(0, 0.45), st.floats(0, 0.45))
def test_group_split_properties(pairs, seed, test_fraction, val_fraction):
    labels = [lab for lab, _ in pairs]
    groups = [f"g{g}" for _, g in pairs]
    fractions = {"test": test_fraction, "val": val_fraction}
    out = group_split(labels, groups, fractions, seed)
    assert len(out) == len(labels) and set(out) <= set(SPLITS)
    by_group = defaultdict(set)
    for g, s in zip(groups, out):
        by_group[g].add(s)
    assert all(len(s) == 1 for s in by_group.values())
    assert group_split(labels, groups, fractions, seed) == out
    owners = defaultdict(set)  # class -> groups it is the majority of
    for g in by_group:
        members = sorted(lab for lab, gg in zip(labels, groups) if gg == g)
        owners[min(set(members), key=lambda x: (-members.count(x), x))].add(g)
    for owned in owners.values():
        assert any(by_group[g] == {"train"} for g in owned)


def test_layouts_constant():
    assert LAYOUTS == ("tut2017", "tut2016", "tau2019", "esc50", "urbansound8k", "csv", "folders")
