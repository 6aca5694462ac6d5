"""`make tables`: run records → the paper's table (Markdown, LaTeX, CSV), figures and the records beside them.
Never re-runs anything.

    python -m tvlars.make_tables --table fmnist-mini [--source runs/fmnist-mini | wandb:<entity>/<project>]
        [--out results/fmnist-mini] [--profile full|smoke] [--allow-empty] [--replace-records]

The source defaults to ``runs/<table>`` when it exists, else to the committed records ``results/<table>/runs``.
Writes into ``--out`` (default ``results/<table>``) the table files (``kind: scaling`` specs: ``scaling.md``,
``scaling.csv``; ``kind: lr_window``: ``lr_window.md``, ``lr_window.csv``, ``lr_window_rows.csv``), the figures its
records support (figures of an older build that this one does not draw are removed), from a local source a copy
of the table's run records in ``<out>/runs/`` (no checkpoints, backbones, W&B files), and ``RUN.md``, how the results
were produced, from those records and the spec (tvlars.report.run_md). Prints the runs found by
status, the problems and the table. It holds ``--out`` (tvlars.lock) while it writes there. Exit code 0 whenever the
table was written; 2 with one ``error:`` line for an unknown table, an unreadable source, a source without any run
of the table or without any finished one (unless --allow-empty), records of an older build that this one would
drop (unless --replace-records), an output directory another process holds, or one that cannot be written (full).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from tvlars.errors import UserError
from tvlars.lock import DirLock
from tvlars.records import FINAL, Status, write_atomic
from tvlars.report import build_table, collect, lr_window, records, run_md, status_summary, write_figures
from tvlars.report.collect import WANDB_PREFIX
from tvlars.report.figures import FIGURES
from tvlars.report.instrument_figures import FIGURES as INSTRUMENT_FIGURES
from tvlars.report.instrument_figures import write_instrument_figures
from tvlars.report.scaling import FIGURE as SCALING_FIGURE
from tvlars.report.scaling import build_scaling, scaling_figure
from tvlars.spec import load_spec, smoke_spec


def default_source(table: str, results: Path) -> Path:
    """``runs/<table>`` when a sweep ran here, else the records committed with the table."""
    local = Path("runs") / table
    return local if local.is_dir() else results / "runs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, help="spec name (tvlars/experiments/<name>.yaml) or path")
    parser.add_argument("--source", help="run directory tree or wandb:<entity>/<project> "
                                         "(default runs/<table>, else results/<table>/runs)")
    parser.add_argument("--out", help="output directory (default results/<table>)")
    parser.add_argument("--profile", choices=("full", "smoke"), default="full",
                        help="smoke: the table as `python -m tvlars.reproduce --profile smoke` shrank it")
    parser.add_argument("--allow-empty", action="store_true",
                        help="write the table even when the source holds no run of it (every cell '–')")
    parser.add_argument("--replace-records", action="store_true",
                        help="let <out>/runs lose records that this build does not use")
    args = parser.parse_args(argv)
    try:
        with contextlib.ExitStack() as held:
            return make(args, held)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {exc.filename or 'the output directory'} ({exc.strerror}); free space or pass "
              "--out <writable dir>", file=sys.stderr)
        return 2


def make(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    """Build the table of ``args`` into its output directory, which ``held`` holds (tvlars.lock) meanwhile."""
    spec = load_spec(args.table)
    if args.profile == "smoke":
        spec = smoke_spec(spec, data_root="")
    out = Path(args.out or Path("results") / spec.name)
    source = args.source or str(default_source(spec.name, out))
    df = collect(source)
    mine = df[(df["table"] == spec.name) | (df["status"] == "corrupt")]
    ours = mine[mine["table"] == spec.name]
    if ours.empty and not args.allow_empty:
        raise UserError(f"{source} holds no run of table {spec.name}, so every cell would be '–'; run "
                        f"`make reproduce-table TABLE={spec.name}`, pass --source <runs dir>, or --allow-empty")
    if not ours["status"].isin(FINAL).any() and not args.allow_empty:
        failed = ours[ours["status"] == Status.failed.value]
        first = f" (first error: {failed['error'].iloc[0]})" if not failed.empty else ""
        raise UserError(f"none of the {len(ours)} run(s) of table {spec.name} in {source} finished{first}, so "
                        "no cell would have a number; fix the cause and rerun, or pass --allow-empty")
    held.enter_context(DirLock(out, f"table {spec.name}'s results directory"))
    records.recover(out / "runs")
    local = not source.startswith(WANDB_PREFIX)
    in_place = local and Path(source).resolve() == (out / "runs").resolve()
    names = records.record_names(mine["run_dir"]) if local else {}
    if not in_place:
        records.check_replace(out / "runs", names, args.replace_records)
    scaling, window = spec.kind == "scaling", spec.kind == lr_window.KIND
    table = lr_window.build(spec, df) if window else build_scaling(spec, df) if scaling else build_table(spec, df)
    written = []
    for name, text in table.files.items():
        write_atomic(out / name, text.encode())
        written.append(out / name)
    if window:
        figures = lr_window.figures(spec, table, out)
    else:
        figures = scaling_figure(spec, table, out) if scaling else write_figures(spec, table, df, out)
        figures += write_instrument_figures(spec, df, out)
    drawn = (*FIGURES, SCALING_FIGURE, *INSTRUMENT_FIGURES, *lr_window.FIGURES)
    for stale in (out / name for name in drawn if out / name not in figures):
        stale.unlink(missing_ok=True)  # a figure of an older build that these records no longer support
    if not in_place:
        records.copy_records(names, out / "runs")
    written.append(run_md.write(spec, df, out, source))
    count, size = records.size(out / "runs")
    print(status_summary(spec, df))
    print(f"{len(table.problems)} problem(s)" + (" (listed under Problems below)" if table.problems else "") + "\n")
    print(table.markdown)
    print("wrote " + ", ".join(str(p) for p in [*written, *figures]))
    print(f"records: {count} run(s), {size / 1e6:.1f} MB in {out / 'runs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
