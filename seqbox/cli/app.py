"""Every command but ``run`` (which is parsed on the fast path), with typer."""

from __future__ import annotations

import typer

from seqbox._version import __version__
from seqbox.cli import handle_errors
from seqbox.cli.admin import clean_main, kill_main, status_main
from seqbox.cli.doctor import doctor_main
from seqbox.cli.init import init_main
from seqbox.cli.logs import logs_main
from seqbox.cli.monitor import monitor_main
from seqbox.cli.report import report_main
from seqbox.cli.run import run_main
from seqbox.errors import EXIT_SEQBOX_FAILED
from seqbox.mcp_server import Ceilings, serve
from seqbox.options import DOCS_URL
from seqbox.output import Output

app = typer.Typer(
    name="seqbox",
    help="Run commands one at a time per project, with memory, process and time limits "
    "on the whole process tree.",
    epilog=f"Documentation: {DOCS_URL}",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,  # plain help: flags without a "<bool>" type column
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"seqbox {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Run commands one at a time per project, with whole-tree limits."""


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def run(ctx: typer.Context) -> None:
    """Wait for the project's lock, then run CMD under limits (see 'seqbox run --help').

    \b
    examples:
      seqbox run --mem 2G -- pytest -x
      seqbox run --mem 512M --timeout 5m --pids 256 -- make -j8
    """
    raise typer.Exit(run_main(list(ctx.args)))


@app.command()
def doctor(
    json: bool = typer.Option(False, "--json", help="Print the facts as one JSON object."),
) -> None:
    """Explain which backend 'auto' picks here and why.

    Exit status 0 when a kernel-enforced backend (cgroup2 or cgroup1) is usable,
    1 when only polling is.

    \b
    examples:
      seqbox doctor
      seqbox doctor --json | jq .backend
    """
    raise typer.Exit(handle_errors(lambda: doctor_main(json), debug=False))


@app.command()
def status(
    json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show the running command and the queue, per lock of this project.

    \b
    examples:
      seqbox status
      seqbox status --json
    """
    raise typer.Exit(handle_errors(lambda: status_main(json), debug=False))


@app.command()
def kill(
    lock: str = typer.Option(
        None, "--lock", metavar="NAME", help="Only this lock's run (default: every lock of the project)."
    ),
    all_: bool = typer.Option(False, "--all", help="Also cancel the waiters first, so none starts."),
) -> None:
    """Kill the running command's whole tree at once.

    Exit status 0 when something was killed or cancelled, 1 when nothing was running.

    \b
    examples:
      seqbox kill
      seqbox kill --lock gpu
      seqbox kill --all
    """
    raise typer.Exit(handle_errors(lambda: kill_main(lock, all_), debug=False))


@app.command()
def clean() -> None:
    """Remove what crashed runs left behind (cgroups, queue state) and say what.

    \b
    examples:
      seqbox clean
    """
    raise typer.Exit(handle_errors(clean_main, debug=False))


@app.command()
def init(
    folder: str = typer.Argument(None, metavar="DIR", help="Where --recipe writes (default: scripts/)."),
    toml: bool = typer.Option(False, "--toml", help="Write seqbox.toml even when there is a pyproject.toml."),
    recipe: bool = typer.Option(
        False, "--recipe", help="Write the old recipe's drop-in scripts (seq, wait_all.sh, ...) instead."
    ),
    force: bool = typer.Option(False, "--force", help="With --recipe: replace scripts of the same name."),
) -> None:
    """Write a commented config for this project and show how to use seqbox in pre-commit and CI.

    The config goes into pyproject.toml as [tool.seqbox] when there is one, else
    into seqbox.toml; an existing config is never touched.

    \b
    examples:
      seqbox init
      seqbox init --toml
      seqbox init --recipe            # scripts/seq, scripts/wait_all.sh, ...
      seqbox init --recipe tools/
    """
    raise typer.Exit(handle_errors(lambda: init_main(toml, recipe, folder, force), debug=False))


@app.command()
def logs(
    run: str = typer.Argument(
        None, metavar="RUN", help="A run: its number in the list (1 = newest), its run id or part of it."
    ),
    follow: bool = typer.Option(False, "--follow", "-f", help="Print the current run's events as they come."),
    limit: int = typer.Option(20, "--limit", "-n", metavar="N", help="How many recent runs to list."),
    json: bool = typer.Option(False, "--json", help="JSON Lines: one run per line, or the run's raw events."),
) -> None:
    """List this project's recent runs (when, command, status, peak memory, duration), or show one.

    Every 'seqbox run' writes a JSON Lines log (start, lock, a sample a second,
    warnings, kills, exit with the summary); the newest keep_logs (200) are kept.

    \b
    examples:
      seqbox logs                 # the recent runs, newest first
      seqbox logs 1               # every event of the newest run
      seqbox logs --follow        # the running command's events, live
      seqbox logs -n 5 --json     # machine-readable
    """
    raise typer.Exit(handle_errors(lambda: logs_main(run, follow, limit, json), debug=False))


@app.command()
def report(
    run: str = typer.Argument(
        None, metavar="RUN", help="A run: its number in 'seqbox logs' (1 = newest), or its run id."
    ),
    svg: str = typer.Option(None, "--svg", metavar="FILE", help="Also write the picture to FILE as SVG."),
    markdown: bool = typer.Option(
        False, "--markdown", help="Print the run's CI job summary block (Markdown) instead."
    ),
) -> None:
    """Show one run's summary with its memory over time, the limit and any kill marked.

    \b
    examples:
      seqbox report               # the newest run
      seqbox report 3             # the third newest
      seqbox report --svg mem.svg # also as an SVG picture, e.g. a CI artifact
      seqbox report --markdown 1 >> "$CI_SUMMARY"  # the CI job summary block
    """
    raise typer.Exit(handle_errors(lambda: report_main(run, svg, markdown), debug=False))


@app.command()
def monitor(
    once: bool = typer.Option(False, "--once", help="Print the view once and exit (no full screen)."),
) -> None:
    """Live full-screen view of this project: the running command, its memory
    against the limit, the queue. Refreshed every second; q quits.

    \b
    examples:
      seqbox monitor
      seqbox monitor --once
    """
    raise typer.Exit(handle_errors(lambda: monitor_main(once), debug=False))


@app.command()
def mcp(
    mem: str = typer.Option("2G", "--mem", metavar="SIZE", help="Default and most memory of a call."),
    timeout: str = typer.Option("10m", "--timeout", metavar="DURATION", help="Default and longest timeout."),
    pids: str = typer.Option("1024", "--pids", metavar="N", help="Process limit of every call's tree."),
    budget: str = typer.Option(
        None, "--budget", metavar="SIZE", help="Memory budget of their lock (or auto)."
    ),
    root: str = typer.Option(None, "--root", metavar="DIR", help="Calls run in DIR or below [default: .]."),
    lock: str = typer.Option(
        None, "--lock", metavar="NAME", help="The lock calls queue in [default: default]."
    ),
) -> None:
    """Serve seqbox to an agent host as an MCP server over stdio (needs 'seqbox-cli[mcp]').

    Tools: run, status, kill, report. A call may lower the limits given here,
    never raise them. seqbox isolates no files and no network (see docs/mcp.md).

    \b
    examples:
      seqbox mcp --mem 2G --timeout 10m --root ~/src/project
      seqbox mcp --budget auto --pids 512
    """
    raise typer.Exit(
        handle_errors(
            lambda: serve(Ceilings(mem=mem, timeout=timeout, pids=pids, budget=budget, root=root, lock=lock)),
            debug=False,
        )
    )


# The command list shows each command's first paragraph whole (click cuts a docstring's
# to the width left over, at 80 columns when not on a terminal).
for _info in app.registered_commands:
    if _info.short_help is None and _info.callback is not None and _info.callback.__doc__:
        _info.short_help = " ".join(_info.callback.__doc__.split("\n\n")[0].split())


def app_main(args: list[str]) -> int:
    """Run the typer app; a usage error is one line and exit 125, like ``run``'s."""
    try:
        result = app(args=args, prog_name="seqbox", standalone_mode=False)
    except typer.Exit as exit_:
        return int(exit_.exit_code)
    except typer.Abort:
        return 130
    except Exception as err:
        # typer's (or click's, in older typer) usage errors carry format_message()
        format_message = getattr(err, "format_message", None)
        if format_message is None:
            raise
        if type(err).__name__ == "NoArgsIsHelpError":  # plain `seqbox`: the help is the answer
            typer.echo(str(format_message()))
            return 0
        message = " ".join(str(format_message()).split())
        Output().error(message + " (see 'seqbox --help')")
        return EXIT_SEQBOX_FAILED
    return result if isinstance(result, int) else 0
