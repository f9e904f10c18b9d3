"""The end of a run: its summary, made from the tries' outcomes in one call,
then handed to each writer in turn (the run log's ``exit`` event, ``-v``'s
closing line, the ``--log`` transcript, ``--report``, the CI job summary).

A writer is a callable taking the summary's JSON object; one that fails warns
and leaves the rest (and the exit code) alone. To write the summary somewhere
new, add a writer to :func:`writers`.
"""

from __future__ import annotations

from seqbox.errors import SeqboxError
from seqbox.output import VERBOSE
from seqbox.summary import Summary, dumps

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from seqbox.admit import Admission
    from seqbox.runner import Run
    from seqbox.supervise import Outcome
    from seqbox.transcript import Transcript

    Writer = Callable[[dict[str, object]], None]


def summarize(run: Run, admission: Admission, backend: str, outcomes: Sequence[Outcome]) -> Summary:
    """The summary of a run whose tries ended with ``outcomes`` (the last one last)."""
    last = outcomes[-1]
    log = run.log
    if log is not None:
        log.flush()  # written out first, so that the path the summary names exists
    return Summary(
        command=list(run.argv),
        status=last.status,
        exit_code=last.exit_code,
        signal=last.signal,
        wall_s=round(sum(o.wall_s for o in outcomes), 3),
        cpu_s=round(sum(o.cpu_s or 0.0 for o in outcomes), 3),
        peak_mem_bytes=max(o.peak_mem_bytes or 0 for o in outcomes) or None,
        mem_limit_bytes=admission.limits.mem,
        procs_peak=max(o.procs_peak for o in outcomes),
        backend=backend,
        lock=admission.lock,
        lock_wait_s=round(admission.waited, 3),
        attempts=len(outcomes),
        run_id=run.run_id,
        log=None if log is None else log.written_path,
        reserved_bytes=None if admission.reserved is None else admission.reserved[0],
        frozen_s=round(sum(o.frozen_s for o in outcomes), 3),
        culprit=last.culprit,
    )


def finish(summary: Summary, run: Run, admission: Admission, transcript: Transcript | None) -> None:
    """Hand the summary to every writer, in order."""
    document = summary.as_json()
    for write in writers(run, admission, transcript):
        write(document)


def writers(run: Run, admission: Admission, transcript: Transcript | None) -> list[Writer]:
    """Where a finished run's summary goes, in this order."""
    found: list[Writer] = [run.end_log]
    if run.out.level >= VERBOSE:
        found.append(lambda document: closing_line(run, document))
    if transcript is not None:
        found.append(lambda document: end_transcript(transcript, document))
    if run.options.report:
        found.append(lambda document: report(run, document))
    step_summary = run.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary and run.options.summary and not admission.nested:
        found.append(lambda document: job_summary(run, step_summary, document))
    return found


def closing_line(run: Run, document: dict[str, object]) -> None:
    """``-v``: one line that says how the run ended."""
    from seqbox.runlog import closing_line

    run.out.info(closing_line(document))


def end_transcript(transcript: Transcript, document: dict[str, object]) -> None:
    """``--log``: the summary closes the transcript."""
    transcript.line("=== seqbox summary: " + dumps(document) + "\n")
    transcript.close()


def report(run: Run, document: dict[str, object]) -> None:
    """``--report FILE``: the summary, written atomically."""
    from seqbox.summary import write_report

    assert run.options.report is not None
    try:
        write_report(run.options.report, document)
    except SeqboxError as err:  # the command ran: its exit code stands
        run.out.note(f"warning: {err}")


def job_summary(run: Run, path: str, document: dict[str, object]) -> None:
    """A top-level run in a GitHub Actions job: its Markdown block in the job summary."""
    from seqbox.stepsummary import append

    append(path, document, run.out)
