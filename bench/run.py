"""Run the sceneclf benchmark suite: each benchmark's result replaces its section in bench/RESULTS.md.

    python bench/run.py                 # everything (the 50-trial search takes a while)
    python bench/run.py --quick         # smaller counts, same figures (written to the log only)
    python bench/run.py --only datapath --only compute

Benchmarks: datapath, compute, pruning, sampler, workers, e2e, inference, quality, deploy, prep, resume, front, profile (see bench/README.md).
bench/RESULTS.md keeps the latest full result of each benchmark; the whole run is appended to
bench/logs/RESULTS-history.md (not committed). Both are written after each benchmark, so an
interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import re
import shlex
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Context, Goal, Section, git_state, load, machine, machine_lines, yes

BENCHMARKS = ["datapath", "compute", "pruning", "sampler", "workers", "e2e", "inference", "quality", "deploy", "prep", "resume", "front", "profile"]
# bench/profile.py would shadow the stdlib's profile module whenever a script here runs by path
MODULES = {"profile": "profiling"}
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
LOG = Path(__file__).resolve().parent / "logs" / "RESULTS-history.md"
HEADER = """# sceneclf benchmark results

The latest result of each benchmark. `bench/run.py` replaces the section of each benchmark it runs
(not on `--quick` runs) and keeps the others; each whole run is also appended to
`bench/logs/RESULTS-history.md` (not committed). Sections without a `bench:` marker were measured
by hand. Every figure is a pair or a ratio measured side by side: the machine is shared.
"""


def append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(text)


def goal_table(goals: list[Goal]) -> list[str]:
    return (["| figure | value | goal | met |", "|---|---|---|---|"]
            + [f"| {g.figure} | {g.value} | {g.goal} | {yes(g.met)} |" for g in goals])


def marker(name: str) -> str:
    return f"<!-- bench:{name} -->"


def section_name(block: str) -> str | None:
    """The benchmark a `## ` block of RESULTS.md belongs to (its heading ends with its marker)."""
    found = re.search(r"<!-- bench:(\w+) -->\s*$", block.split("\n", 1)[0])
    return found and found.group(1)


def replace_section(path: Path, name: str, section: str) -> None:
    """Put `section` in place of benchmark `name`'s block in `path`, or, if it has none yet, after
    the blocks of the benchmarks before it; every other block stays as it is."""
    head, *blocks = re.split(r"(?m)^(?=## )", path.read_text() if path.exists() else HEADER)
    names = [section_name(b) for b in blocks]
    if name in names:
        blocks[names.index(name)] = section
    else:
        before = BENCHMARKS[:BENCHMARKS.index(name)] if name in BENCHMARKS else names  # others go last
        earlier = [i for i, n in enumerate(names) if n in before]
        blocks.insert(earlier[-1] + 1 if earlier else len(blocks), section)
    text = head.rstrip() + "\n\n" + "".join(b.rstrip() + "\n\n" for b in blocks)
    path.write_text(re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n")


def latest_section(name: str, sec: Section, run: str) -> str:
    """Benchmark `name`'s block of RESULTS.md: when, how and where it ran, its tables, its goals."""
    lines = [f"## {sec.title} {marker(name)}", "", run, f"- Machine: {machine()}", "", *sec.lines, ""]
    return "\n".join(lines + goal_table(sec.goals))


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
    ap.add_argument("--results", type=Path, default=RESULTS, help="file whose benchmark sections to replace")
    ap.add_argument("--log", type=Path, default=LOG, help="file to append the whole run to")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (logs, studies)")
    ap.add_argument("--seeds", type=seed_list, default=None, metavar="A-B|A,B,...",
                    help="seeds of benchmarks 3 (pruning) and 8 (quality) instead of their own, e.g. 4-7")
    args = ap.parse_args(argv)

    from sceneclf.data.prepare import default_cache_dir

    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    tmp = Path(tempfile.mkdtemp(prefix="sceneclf-bench-"))
    ctx = Context(quick=args.quick, cache_dir=(args.cache_dir or default_cache_dir()).resolve(), tmp=tmp,
                  seeds=args.seeds)
    # the command as a user types it: no paths of this machine
    command = shlex.join(["python", "bench/run.py", *(["--quick"] if args.quick else []),
                          *(arg for name in args.only or [] for arg in ("--only", name)),
                          *(["--seeds", ",".join(map(str, args.seeds))] if args.seeds else [])])
    full = not args.quick  # quick counts are no benchmark result; a seed subset says its seeds
    started = dt.datetime.now().astimezone()
    code = git_state()
    head = [f"\n## {started:%Y-%m-%d %H:%M %Z} · `{command}`\n", *machine_lines(),
            (f"- Benchmarks: {', '.join(names)}{' (quick counts)' if args.quick else ''}; "
             f"load average at start {load()}"), ""]
    append(args.log, "\n".join(head) + "\n")
    ctx.say(f"results -> {args.results if full else '(log only)'}, log -> {args.log}; temporary files in {tmp}")
    sections: list[Section] = []
    failed = []
    for name in names:
        ctx.say(f"benchmark {name}")
        before = load()
        t0 = dt.datetime.now()
        try:
            sec = importlib.import_module(f"bench.{MODULES.get(name, name)}").run(ctx)
        except Exception:  # noqa: BLE001  one benchmark failing must not lose the others
            failed.append(name)
            sec = Section(f"{name}: FAILED")
            sec.add("```", traceback.format_exc().rstrip()[-3000:], "```")
            ctx.say(f"benchmark {name} failed:\n{traceback.format_exc()}")
        minutes = (dt.datetime.now() - t0).total_seconds() / 60
        timing = f"{minutes:.1f} min; load average before {before}, after {load()}"
        if full and name not in failed:
            run = f"- Run: {started:%Y-%m-%d %H:%M %Z} · `{command}` · git {code} · {timing}"
            replace_section(args.results, name, latest_section(name, sec, run))
        sec.add("", f"_{timing}._")
        sections.append(sec)
        append(args.log, sec.markdown() + "\n")
        ctx.say(f"benchmark {name} done in {minutes:.1f} min")
    lines = ["### Summary", "", *goal_table([g for s in sections for g in s.goals])]
    total = (dt.datetime.now().astimezone() - started).total_seconds() / 60
    lines += ["", f"_Suite: {total:.1f} min; load average at end {load()}"
              + (f"; failed: {', '.join(failed)}" if failed else "") + "._", ""]
    append(args.log, "\n".join(lines) + "\n")
    print("\n".join(lines))
    if not args.keep_tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
