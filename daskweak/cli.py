"""`daskweak run | plan | results | report | compare | publish | check | accept | calibrate | k8s-secret`: the
benchmark's whole line without Airflow.

Exit codes: 0 success, 1 run failure, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dask.utils import format_bytes
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from daskweak.errors import ConfigError, DaskweakError, Problem, ResultsNotWritten
from daskweak.logs import configure_logging
from daskweak.plan import Step, make_plan
from daskweak.settings import Settings, load_settings
from daskweak.signals import Terminated, interrupts_raise

if TYPE_CHECKING:
    from daskweak.spool import Spool

console = Console(width=None if sys.stdout.isatty() else 160)

SYNC = "sync"  # `daskweak results sync`: in the run id's place (no run is called that)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        env_file, overrides = settings_source(args)
        settings = load_settings(env_file, **overrides)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return 2
    configure_logging(settings.verbose)
    try:
        return args.command(settings, args)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return 2
    except DaskweakError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 1
    except (KeyboardInterrupt, Terminated) as exc:
        console.print(f"[yellow]interrupted[/yellow] ({str(exc) or 'Ctrl-C'}); clusters closed, finished steps kept")
        return 143 if isinstance(exc, Terminated) else 130


def settings_source(args: argparse.Namespace) -> tuple[Path | None, dict[str, str]]:
    """(settings file, overrides) from the options given before and after the command, all of them kept:
    `--set` from both places (the later wins for the same key), one `--env-file` unless both agree."""
    files = {Path(f).resolve(): f for f in (args.global_env_file, args.env_file) if f is not None}
    if len(files) > 1:
        given = " and ".join(str(f) for f in files.values())
        raise ConfigError([Problem("--env-file", given, "one settings file (given before and after the command)")])
    overrides = dict([*(args.global_set or []), *(args.set or [])])
    return next(iter(files.values()), None), overrides


def _settings_options(dest_prefix: str) -> argparse.ArgumentParser:
    """`--env-file` and `--set`, accepted before and after the command; the two places get their own dests
    (argparse would let a subcommand's value replace the global one), merged by `settings_source`."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--env-file", type=Path, dest=f"{dest_prefix}env_file", default=None,
                         help="settings file (default: ./.env when present)")
    options.add_argument("--set", metavar="KEY=VALUE", type=_key_value, action="append", dest=f"{dest_prefix}set",
                         default=None, help="override one setting (repeatable), e.g. --set MAX_N_CORES=4")
    return options


def _parser() -> argparse.ArgumentParser:
    common = _settings_options("")
    parser = argparse.ArgumentParser(prog="daskweak", description=__doc__, parents=[_settings_options("global_")],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    run = commands.add_parser("run", parents=[common], help="run the sweep and store every observation")
    run.set_defaults(command=cmd_run)
    run.add_argument("--nightly", action="store_true",
                     help="record the run as a night (a cron job without Airflow): once `daskweak check` has "
                     "judged it, it may join the baseline later nights are judged against")
    plan = commands.add_parser("plan", parents=[common], help="print the steps without starting anything")
    plan.set_defaults(command=cmd_plan)
    secret = commands.add_parser("k8s-secret", parents=[common],
                                 help="create or update the TLS Secret SECRET_CERT_NAME from CERT_DIR")
    secret.set_defaults(command=cmd_k8s_secret)
    results = commands.add_parser("results", parents=[common], help="list stored runs or export one")
    results.set_defaults(command=cmd_results)
    results.add_argument("run_id", nargs="?", help=f"export this run (default: list runs); `{SYNC}`: load the rows "
                         "spooled while the database did not answer (RES_DIR/spool) into the table")
    results.add_argument("--format", choices=("csv", "parquet"), default="csv", help="raw rows format")
    results.add_argument("--out", type=Path, help="directory for the export (default: RES_DIR)")
    report = commands.add_parser("report", parents=[common], help="write a run's HTML report and plots")
    report.set_defaults(command=cmd_report)
    report.add_argument("run_id", nargs="?", help="the run (default: the latest)")
    report.add_argument("--out", type=Path, help="directory (default: RES_DIR/reports/RUN_ID)")
    compare = commands.add_parser("compare", parents=[common],
                                  help="compare runs with the first: ratio per operation and cores, significance")
    compare.set_defaults(command=cmd_compare)
    compare.add_argument("run_ids", nargs="+", metavar="RUN_ID[,RUN_ID…]",
                         help="one side per argument; several runs of a side joined by commas are tested at the "
                         "run level")
    compare.add_argument("--out", type=Path,
                         help="directory for compare.html and its plots (default: RES_DIR/reports/compare-…)")
    publish = commands.add_parser("publish", parents=[common],
                                  help="write a static site of every run's report and the trends into DIR")
    publish.set_defaults(command=cmd_publish)
    publish.add_argument("directory", type=Path, metavar="DIR")
    publish.add_argument("--force", action="store_true", help="re-render every report, changed or not")
    check = commands.add_parser("check", parents=[common],
                                help="regression check of a run against its baseline (exit 1 on a regression)")
    check.set_defaults(command=cmd_check)
    check.add_argument("run_id")
    accept = commands.add_parser("accept", parents=[common],
                                 help="accept a run's level as the new normal: its regression baseline starts there")
    accept.set_defaults(command=cmd_accept)
    accept.add_argument("run_id")
    accept.add_argument("--operation", metavar="SUITE[.OP]", help="only this suite or operation (default: all); "
                        "a suite's peak memory is SUITE.peak_memory")
    accept.add_argument("--note", help="why, for whoever reads the history")
    calibrate = commands.add_parser("calibrate", parents=[common],
                                    help="run the sweep R times: noise, detectable slowdown, recommended settings")
    calibrate.set_defaults(command=cmd_calibrate)
    calibrate.add_argument("--repeats", type=int, default=5, metavar="R", help="runs of the sweep (default 5, ≥ 2)")
    calibrate.add_argument("--runs", metavar="RUN,RUN,…", type=lambda text: [r for r in text.split(",") if r],
                           help="analyse these finished runs of the same settings (past nights, say) instead of "
                                "running the sweep again")
    return parser


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def cmd_plan(settings: Settings, args: argparse.Namespace) -> int:
    table = Table(title=f"{settings.scaling} scaling plan on {settings.backend}")
    for column in ("step", "cores", "nodes", "layout", "workers", "threads/worker", "memory/node",
                   "array (side, chunk)", "dataframe rows (partitions)", "tasks", "data size"):
        table.add_column(column, justify="right")
    for step in make_plan(settings):
        table.add_row(
            str(step.index), str(step.cores), str(step.nodes), "+".join(map(str, step.node_cores)),
            str(step.workers), str(step.threads_per_worker), _bytes(step.memory_per_node),
            f"{step.array_side}² ({step.array_chunk})", f"{step.dataframe_rows:,} ({step.dataframe_partitions})",
            f"{step.tasks:,}", _data_size(settings, step),
        )
    console.print(table)
    if settings.ignored:
        names = ", ".join(name.upper() for name in settings.ignored)
        console.print(f"ignored on {settings.backend} (they configure another backend): {names}", highlight=False)
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from daskweak.analysis.stats import efficiency
    from daskweak.analysis.tables import efficiency_table, noise_note
    from daskweak.export import export_run
    from daskweak.runner import run_sweep
    from daskweak.store import ResultStore

    with interrupts_raise(), _RichProgress() as progress:
        result = run_sweep(settings, progress=progress, kind="nightly" if args.nightly else "cli")
    if result.unwritten:  # the database is still away: nothing to tabulate or export yet, the spool has it
        _print_failed_steps(result.summaries)
        raise ResultsNotWritten(f"run {result.run_id} ({result.status}): {result.unwritten}")
    with ResultStore.of(settings) as store:
        observations = store.observations(result.run_id)
        note = None
        if not observations.empty:
            table = efficiency(observations, settings.scaling, settings.noise_limit_pct / 100)
            console.print(efficiency_table(table, settings.scaling))
            note = noise_note(table, settings.noise_limit_pct / 100)
        files = export_run(store, result.run_id, settings.res_dir, settings.res_file_name)
    _print_failed_steps(result.summaries)
    if note:
        console.print(f"[yellow]{note}[/yellow]", highlight=False)
    console.print(f"run [bold]{result.run_id}[/bold]: {result.status}; results in {settings.masked_database_url}")
    for path in files:
        console.print(f"  wrote {path}")
    return 0 if result.status == "ok" else 1


def _print_failed_steps(summaries: list[dict[str, Any]]) -> None:
    for summary in summaries:
        if summary["status"] != "ok":
            console.print(f"[yellow]step {summary['step']} ({summary['cores_requested']} cores): "
                          f"{summary['status']}[/yellow] {summary['error'] or 'some operations failed'}")


def cmd_k8s_secret(settings: Settings, args: argparse.Namespace) -> int:
    from daskweak.backends.kubernetes.tls_secret import apply_tls_secret

    console.print(f"Secret {apply_tls_secret(settings)} holds CERT_DIR's CA and scheduler certificate "
                  f"(client certificate: {settings.cert_dir}/client.crt)", highlight=False)
    return 0


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from daskweak.analysis.report import latest_run_id, run_report
    from daskweak.orchestration import report_dir
    from daskweak.store import ResultStore

    with ResultStore.of(settings) as store:
        run_id = args.run_id or latest_run_id(store)
        paths = run_report(store, run_id).write(args.out or report_dir(settings, run_id))
    for path in paths:
        console.print(f"wrote {path}", highlight=False)
    return 0


def cmd_compare(settings: Settings, args: argparse.Namespace) -> int:
    from daskweak.analysis.comparison import label, sides_of, too_few
    from daskweak.analysis.report import compare, compare_report, ratio_interval_text
    from daskweak.store import ResultStore

    sides = sides_of(args.run_ids)
    if len(sides) < 2:
        raise DaskweakError("compare needs two or more sides (runs, or RUN,RUN,… groups): the first is the reference")
    with ResultStore.of(settings) as store:
        ratios = compare(store, sides)
        name = "-vs-".join(label(side).replace(",", "+") for side in sides)
        directory = args.out or settings.res_dir / "reports" / f"compare-{name}"
        paths = compare_report(store, sides).write(directory, name="compare.html")
    table = Table(title=f"median time relative to {label(sides[0])} (ratio > 1: slower; Holm over "
                  f"{len(ratios)} comparisons)")
    numbers = ("cores", "ratio", "interval", "p", "p (Holm)")
    for column in ("run", "suite", "operation", "unit", *numbers, "significant"):
        table.add_column(column, justify="right" if column in numbers else "left")
    for row in ratios.itertuples():
        table.add_row(row.run, row.suite, row.operation, row.unit, str(row.cores_requested), f"{row.ratio:.3f}",
                      ratio_interval_text(row.ratio_ci_low, row.ratio_ci_high), f"{row.p_value:.2g}",
                      f"{row.p_adjusted:.2g}", "yes" if row.significant else "no")
    console.print(table)
    console.print("interval: at the level Holm tested the row at, from the same test (it excludes 1 exactly when "
                  "the row is significant; —: too few observations to bound it)", highlight=False)
    if note := too_few(ratios):
        console.print(f"[yellow]{note}[/yellow]", highlight=False)
    console.print(f"wrote {paths[0]}", highlight=False)
    return 0


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    from daskweak.analysis.publish import publish
    from daskweak.store import ResultStore

    with ResultStore.of(settings) as store:
        written = publish(store, args.directory, force=args.force)
    console.print(f"wrote {len(written)} file(s); open {args.directory / 'index.html'}", highlight=False)
    return 0


def cmd_accept(settings: Settings, args: argparse.Namespace) -> int:
    from daskweak.analysis.regression import accept
    from daskweak.store import ResultStore

    with ResultStore.of(settings) as store:
        accept(store, args.run_id, args.operation, args.note)
    what = args.operation or "every comparison"
    console.print(f"accepted run {args.run_id} for {what}: from the next check on, its baseline starts at this run",
                  highlight=False)
    return 0


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from daskweak.analysis.regression import check_run
    from daskweak.store import ResultStore

    with ResultStore.of(settings) as store:
        verdict = check_run(store, args.run_id, settings)
    console.print(verdict["markdown"], highlight=False, markup=False)
    return 1 if verdict["status"] == "regression" else 0


def cmd_calibrate(settings: Settings, args: argparse.Namespace) -> int:
    from daskweak.analysis.calibration import calibrate, summary_lines

    if args.repeats < 2 and not args.runs:
        raise ConfigError([Problem("--repeats", str(args.repeats), "at least 2 runs (run-to-run noise needs two)")])
    with interrupts_raise(), _RichProgress() as progress:
        record = calibrate(settings, args.repeats, progress=progress, runs=args.runs)
    table = Table(title=f"noise of {record['repeats']} runs (log-scale sd ≈ CV) and minimal detectable slowdown")
    for column in ("suite", "operation", "cores", "median s", "within", "run-to-run", "MDS now", "MDS recommended"):
        table.add_column(column, justify="left" if column in ("suite", "operation") else "right")

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value:.1%}"

    for row in record["noise"]:
        table.add_row(row["suite"], row["operation"], str(row["cores_requested"]), f"{row['median']:.3f}",
                      pct(row["within"]), pct(row["run_to_run"]), pct(row["mds"]), pct(row["mds_recommended"]))
    console.print(table)
    for line in summary_lines(record):
        console.print(line, highlight=False, markup=False)
    console.print(f"calibration {record['id']} stored in {settings.masked_database_url} "
                  f"(runs {', '.join(record['runs'])})", highlight=False)
    return 0


def cmd_results(settings: Settings, args: argparse.Namespace) -> int:
    from daskweak.export import export_run
    from daskweak.spool import spool_for
    from daskweak.store import ResultStore

    with ResultStore.of(settings) as store:
        spool = spool_for(settings.res_dir, store)
        if args.run_id == SYNC:
            return _sync(spool)
        if args.run_id:
            files = export_run(store, args.run_id, args.out or settings.res_dir, settings.res_file_name, args.format)
            if not files:
                spooled = spool.pending().get(args.run_id)
                hint = (f"; {spooled} record(s) of it wait in {spool.path(args.run_id)}, "
                        f"`daskweak results {SYNC}` loads them") if spooled else ""
                raise DaskweakError(f"no observations for run {args.run_id!r} in {store.masked_url}{hint}")
            for path in files:
                console.print(f"wrote {path}")
            return 0
        runs = store.runs()
        waiting = spool.pending()
    table = Table(title=f"runs in {store.masked_url}")
    for column in ("run", "started", "status", "backend", "scaling", "tls", "fingerprint"):
        table.add_column(column)
    for run in runs.itertuples():
        table.add_row(run.run_id, f"{run.started_at:%Y-%m-%d %H:%M:%S}", run.status, run.backend, run.scaling,
                      "on" if run.use_ssl else "off", run.fingerprint)
    console.print(table)
    for run_id, count in sorted(waiting.items()):
        console.print(f"[yellow]run {run_id}: {count} record(s) wait in {spool.path(run_id)}[/yellow]; "
                      f"`daskweak results {SYNC}` loads them", highlight=False)
    return 0


def _sync(spool: Spool) -> int:
    """`daskweak results sync`: load every spooled run into the table; exit 1 when something stays."""
    report = spool.sync()
    for run_id, count in sorted(report.loaded.items()):
        console.print(f"run {run_id}: loaded {count} spooled record(s) into {spool.store.masked_url}",
                      highlight=False)
    if report.left:
        raise ResultsNotWritten(spool.message(report.left, report.error))
    if not report.loaded:
        console.print(f"nothing to load: no spooled results in {spool.directory}", highlight=False)
    return 0


class _RichProgress:
    """One bar per step, advanced per suite observation."""

    def __init__(self) -> None:
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=console, transient=False)
        self.tasks: dict[int, Any] = {}

    def __enter__(self) -> _RichProgress:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.__exit__(*exc)

    def step_started(self, step: Step, observations: int) -> None:
        self.tasks[step.index] = self.bars.add_task(f"{step.cores} core(s): starting", total=observations)

    def observation_done(self, step: Step, suite: str, observation: int) -> None:
        self.bars.update(self.tasks[step.index], advance=1,
                         description=f"{step.cores} core(s): {suite} #{observation}")

    def step_finished(self, step: Step, summary: dict[str, Any]) -> None:
        spooled = "" if summary.get("stored", True) else " (rows spooled: the database did not answer)"
        self.bars.update(self.tasks[step.index], description=f"{step.cores} core(s): {summary['status']}{spooled}")


def _bytes(value: int | None) -> str:
    return "auto" if value is None else format_bytes(value)


def _data_size(settings: Settings, step: Step) -> str:
    sizes = {"arrays": step.array_bytes, "dataframes": step.dataframe_bytes}
    return " + ".join(f"{suite} {_bytes(sizes[suite])}" for suite in settings.suites if suite in sizes) or "—"


if __name__ == "__main__":
    sys.exit(main())
