"""Run the sceneclf benchmark suite and append a dated section to bench/RESULTS.md.

    /work/venv/bin/python bench/run.py                 # everything (the 50-trial search takes a while)
    /work/venv/bin/python bench/run.py --quick         # smaller counts, same figures
    /work/venv/bin/python bench/run.py --only datapath --only compute

Benchmarks: datapath, compute, pruning, sampler, workers, e2e, inference (see bench/README.md).
Earlier results are never rewritten: each run appends its own section, one benchmark at a time,
so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import shlex
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Context, Section, load, machine_lines, yes

BENCHMARKS = ["datapath", "compute", "pruning", "sampler", "workers", "e2e", "inference"]
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = """# sceneclf benchmark results

Written by `bench/run.py`; each run appends a dated section (newest last), earlier ones are kept.
Every figure is a pair or a ratio measured side by side in the same run, because the machine is
shared and absolute times are noisy; the load average (1/5/15 min) is given per benchmark.
"""


def append(path: Path, text: str) -> None:
    if not path.exists():
        path.write_text(HEADER)
    with path.open("a") as f:
        f.write(text)


def seed_list(text: str) -> tuple[int, ...]:
    """'4-7' or '0,2,5' -> seeds."""
    try:
        if "-" in text:
            first, last = (int(x) for x in text.split("-"))
            return tuple(range(first, last + 1))
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give A-B or A,B,... (whole numbers)") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller counts (minutes instead of an hour)")
    ap.add_argument("--only", action="append", choices=BENCHMARKS, metavar="NAME",
                    help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="sceneclf cache (default: sceneclf's own, $SCENECLF_CACHE or ~/.cache/sceneclf)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="file to append to")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (logs, studies)")
    ap.add_argument("--seeds", type=seed_list, default=None, metavar="A-B|A,B,...",
                    help="seeds of benchmark 3 (pruning) instead of its own, e.g. 4-7")
    args = ap.parse_args(argv)

    from sceneclf.data.prepare import default_cache_dir

    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    tmp = Path(tempfile.mkdtemp(prefix="sceneclf-bench-"))
    ctx = Context(quick=args.quick, cache_dir=(args.cache_dir or default_cache_dir()).resolve(), tmp=tmp,
                  seeds=args.seeds)
    given = sys.argv[1:] if argv is None else argv
    command = "python bench/run.py" + (" " + shlex.join(given) if given else "")
    started = dt.datetime.now().astimezone()
    head = [f"\n## {started:%Y-%m-%d %H:%M %Z} · `{command}`\n", *machine_lines(),
            (f"- Benchmarks: {', '.join(names)}{' (quick counts)' if args.quick else ''}; "
             f"load average at start {load()}"), ""]
    append(args.results, "\n".join(head) + "\n")
    ctx.say(f"results -> {args.results}; temporary files in {tmp}")
    sections: list[Section] = []
    failed = []
    for name in names:
        ctx.say(f"benchmark {name}")
        before = load()
        t0 = dt.datetime.now()
        try:
            sec = importlib.import_module(f"bench.{name}").run(ctx)
        except Exception:  # noqa: BLE001  one benchmark failing must not lose the others
            failed.append(name)
            sec = Section(f"{name}: FAILED")
            sec.add("```", traceback.format_exc().rstrip()[-3000:], "```")
            ctx.say(f"benchmark {name} failed:\n{traceback.format_exc()}")
        minutes = (dt.datetime.now() - t0).total_seconds() / 60
        sec.add("", f"_{minutes:.1f} min; load average before {before}, after {load()}._")
        sections.append(sec)
        append(args.results, sec.markdown() + "\n")
        ctx.say(f"benchmark {name} done in {minutes:.1f} min")
    goals = [g for s in sections for g in s.goals]
    lines = ["### Summary", "", "| figure | value | goal | met |", "|---|---|---|---|"]
    lines += [f"| {g.figure} | {g.value} | {g.goal} | {yes(g.met)} |" for g in goals]
    total = (dt.datetime.now().astimezone() - started).total_seconds() / 60
    lines += ["", f"_Suite: {total:.1f} min; load average at end {load()}"
              + (f"; failed: {', '.join(failed)}" if failed else "") + "._", ""]
    append(args.results, "\n".join(lines) + "\n")
    print("\n".join(lines))
    if not args.keep_tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
