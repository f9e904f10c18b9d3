"""``seqbox report [RUN] [--svg FILE]``: one run's summary with its memory over time."""

from __future__ import annotations

import os
import sys

from rich.console import Console

from seqbox import history
from seqbox.errors import SeqboxError
from seqbox.project import project_root
from seqbox.render import plain, report
from seqbox.stepsummary import of_record

WIDTH = 100


def report_main(ref: str | None, svg: str | None, markdown: bool = False) -> int:
    record = history.load(history.find(history.log_directory(os.getcwd(), os.environ), ref))
    if markdown:
        sys.stdout.write(of_record(record))
        return 0
    picture = report(record, width=50, root=project_root(os.getcwd()))
    console = Console(highlight=False, markup=False)
    if console.is_terminal:
        console.print(picture)
    else:  # a pipe or a file: the log's path and the command whole
        sys.stdout.write(plain(picture))
    if svg is not None:
        devnull = open(os.devnull, "w")  # noqa: SIM115 - the recorder's file, closed with the process
        recorder = Console(record=True, width=WIDTH, file=devnull, highlight=False, markup=False)
        recorder.print(picture)
        try:
            recorder.save_svg(svg, title=f"seqbox report {record.run_id}")
        except OSError as err:
            raise SeqboxError(f"cannot write {svg}: {err.strerror}") from None
        finally:
            recorder.file.close()
    return 0
