"""A run's options, resolved: ``seqbox run``'s arguments read against the
table (:mod:`seqbox.options`), over the layers the config gives.

On ``seqbox run``'s start-up path: plain Python only.
"""

from __future__ import annotations

import os

from seqbox.errors import UsageError
from seqbox.options import BY_FLAG, BY_KEY, NO_SLOT_CAP, OPTIONS, parse_value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

#: options that mean nothing without a queue: given with --no-lock, one is a mistake
QUEUE_OPTIONS = ("lock", "slots", "budget", "wait_timeout")


class RunOptions:
    """Every option of ``seqbox run``, parsed and resolved."""

    mem: int | None
    mem_high: int | None
    warn_at: float | None
    timeout: float | None
    grace: float
    signal: int
    pids: int | None
    cpus: float | None
    retry: int
    retry_on_oom: bool
    lock: str
    no_lock: bool
    slots: int
    budget: int | str | None
    reserve: int | None
    key: str | None
    wait_timeout: float | None
    backend: str
    json: bool
    report: str | None
    log: str | None
    quiet: bool
    verbose: bool
    cwd: str | None
    env: tuple[str, ...]
    profile: str | None
    debug: bool
    poll_interval: float
    log_dir: str | None
    keep_logs: int
    summary: bool

    def __init__(self, cli: Mapping[str, object], root: str, environ: Mapping[str, str]) -> None:
        """The options of a run in the project at ``root``: the command line's
        (``cli``, parsed) over the layers of :func:`seqbox.config.layers`
        (environment, profile, config file), over the defaults."""
        from seqbox.config import layers

        values = {opt.key: parse_value(opt.key, opt.default, f"default {opt.key}") for opt in OPTIONS}
        found, profile = layers(cli.get("profile"), root, environ)  # type: ignore[arg-type]
        for layer in (*found, cli):
            values.update(layer)
        values["profile"] = profile
        if values["slots"] is None:  # one at a time, or as many as fit the budget
            values["slots"] = 1 if values["budget"] is None else NO_SLOT_CAP
        for opt in OPTIONS:
            setattr(self, opt.key, values[opt.key])
        self._check(cli)

    @classmethod
    def from_command_line(
        cls, argv: list[str], environ: Mapping[str, str]
    ) -> tuple[RunOptions, list[str], str] | None:
        """``seqbox run``'s arguments: (the options, the command, the project
        root); None when help was asked for. Options end at ``--`` or at the
        first word that is not an option; each value is parsed as it is read."""
        cli: dict[str, object] = {}
        envs: list[str] = []
        i = 0
        while i < len(argv):
            word = argv[i]
            if word == "--":
                i += 1
                break
            if word in ("-h", "--help"):
                return None
            if not word.startswith("-") or word == "-":
                break
            name, eq, inline = word.partition("=")
            opt = BY_FLAG.get(name)
            if opt is None:
                if not eq and len(word) > 2 and word[1] != "-" and all(f"-{c}" in BY_FLAG for c in word[1:]):
                    for char in word[1:]:  # bundled short flags: -qv
                        cli[BY_FLAG[f"-{char}"].key] = True
                    i += 1
                    continue
                raise UsageError(f"unknown option {name} for 'seqbox run' (see 'seqbox run --help')")
            if not opt.takes:
                if eq:
                    raise UsageError(f"{name} takes no value")
                cli[opt.key] = True
                i += 1
                continue
            if not eq and i + 1 >= len(argv):
                raise UsageError(f"{name} needs a value ({opt.takes})")
            value = inline if eq else argv[i + 1]
            i += 1 if eq else 2
            if opt.key == "env":
                envs.append(value)
            else:
                cli[opt.key] = value
        command = argv[i:]
        if not command:
            raise UsageError("no command given (usage: seqbox run [OPTIONS] -- CMD [ARGS...])")
        for key, raw in cli.items():  # each value by its entry in the table
            if raw is not True:
                cli[key] = BY_KEY[key].parse(raw, f"--{key.replace('_', '-')}")
        if envs:
            cli["env"] = tuple(envs)
        from seqbox.project import project_root

        root = project_root(str(cli["cwd"]) if cli.get("cwd") else os.getcwd())
        return cls(cli, root, environ), command, root

    def extra_env(self) -> dict[str, str]:
        """``--env K=V`` pairs as a dict."""
        out: dict[str, str] = {}
        for pair in self.env:
            name, sep, value = pair.partition("=")
            if not sep or not name:
                raise UsageError(f"--env: expected K=V, got {pair!r}")
            out[name] = value
        return out

    def _check(self, cli: Mapping[str, object]) -> None:
        """Options that cannot go together."""
        if self.quiet and self.verbose:
            raise UsageError("-q and -v cannot be used together")
        if cli.get("no_lock"):
            for key in QUEUE_OPTIONS:
                if key in cli:
                    raise UsageError(f"--{key.replace('_', '-')} and --no-lock cannot be used together")
        if self.mem_high is not None and self.mem is not None and self.mem_high > self.mem:
            raise UsageError("--mem-high must not be above --mem")
        self.extra_env()  # validates K=V
        if self.cwd is not None and not os.path.isdir(self.cwd):
            raise UsageError(f"--cwd: not a directory: {self.cwd}")
