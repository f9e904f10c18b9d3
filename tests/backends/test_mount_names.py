"""A mount point whose name is not ASCII (a USB stick at /media/me/Données),
anywhere on the machine, shows in every process's /proc/self/mountinfo:
seqbox runs beside it on every backend, and doctor says what it would do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.capabilities import needs
from tests.helpers import SeqboxRunner, slack

#: mounts two tmpfs ($1 and $2) in a private mount namespace, then runs the rest
MOUNT_THEN_RUN = 'mount -t tmpfs seqbox-test "$1" && mount -t tmpfs seqbox-test "$2" && shift 2 && exec "$@"'


def _in_namespace(sbx: SeqboxRunner, tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    utf8 = tmp_path / "Données"
    raw = os.path.join(os.fsencode(tmp_path), b"\xffraw")  # in no encoding
    utf8.mkdir()
    os.mkdir(raw)
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", MOUNT_THEN_RUN, "sh"]
    return subprocess.run(
        [*argv, str(utf8), os.fsdecode(raw), *sbx.argv(args)],
        cwd=sbx.project,
        env=sbx.env(),
        capture_output=True,
        timeout=slack(60),
        check=False,
    )


@needs("root")
def test_a_run_beside_mount_points_named_in_any_encoding(
    sbx: SeqboxRunner, backend: str, tmp_path: Path
) -> None:
    res = _in_namespace(sbx, tmp_path, sbx.run_args(["--json", "--mem", "64M", "--", "true"], backend))
    assert res.returncode == 0, res
    assert json.loads(res.stdout.splitlines()[-1])["status"] == "ok", res


@needs("root")
def test_doctor_beside_mount_points_named_in_any_encoding(sbx: SeqboxRunner, tmp_path: Path) -> None:
    res = _in_namespace(sbx, tmp_path, ["doctor", "--json"])
    assert res.returncode == 0, res
    assert json.loads(res.stdout)["backend"] is not None, res
