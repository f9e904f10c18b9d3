"""How seqbox names a command to a person, on one line.

``describe_command`` is the short name in the waiting line, ``status``,
``kill``, ``logs`` and ``monitor``: the program by its file name, not its path
(``python3``, not ``/home/me/.venv/bin/python3``), a script or other long
argument cut short (a path keeps its end) so that the arguments after it
still show::

    python3 -c 'import sys, ti...' agent-0 64
    python3 ...tests/prog.py hog --total 40

``command_line`` is the whole command, for the places that show one run in
full (``report``, ``logs RUN``). Both keep to one line: the whitespace of an
argument (a ``-c`` script's newlines) becomes one space."""

from __future__ import annotations

import os

#: the most a word other than the program keeps when the whole does not fit
WORD_WIDTH = 16
ELLIPSIS = "..."


def plural(count: int, word: str) -> str:
    """``1 process``, ``2 processes``, ``0 forks``."""
    if count == 1:
        return f"{count} {word}"
    return f"{count} {word}es" if word.endswith("s") else f"{count} {word}s"


def _words(command: object) -> list[str]:
    if isinstance(command, (list, tuple)):
        return [" ".join(str(word).split()) for word in command]
    text = str(command if command is not None else "?")  # a command line as a shell takes it
    import shlex

    try:
        return [" ".join(word.split()) for word in shlex.split(text)]
    except ValueError:  # not shell syntax after all
        return text.split()


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - len(ELLIPSIS)].rstrip() + ELLIPSIS


def _cut_word(word: str, width: int) -> str:
    """A word at most ``width`` long: a path keeps its end (the file's name)."""
    if len(word) <= width:
        return word
    if "/" in word and " " not in word:
        return ELLIPSIS + word[len(word) - width + len(ELLIPSIS) :]
    return _cut(word, width)


def _quote(word: str) -> str:
    """A word as a shell takes it, the way a person writes it: ``"print('ok')"``
    rather than shlex's ``'print('"'"'ok'"'"')'``."""
    import shlex

    quoted = shlex.quote(word)
    if "'" in word and not any(c in word for c in '"$`\\!'):
        return f'"{word}"'
    return quoted


def _join(words: list[str]) -> str:
    return " ".join(_quote(word) for word in words)


def command_line(command: object) -> str:
    """The whole command as a shell would take it, on one line."""
    return _join(_words(command)) or "?"


def describe_command(command: object, width: int | None = 40) -> str:
    """The command's short name: at most ``width`` characters (None: no bound)."""
    words = _words(command)
    if not words:
        return "?"
    words[0] = os.path.basename(words[0]) or words[0]
    text = _join(words)
    if width is None or len(text) <= width:
        return text
    text = _join([words[0], *(_cut_word(word, WORD_WIDTH) for word in words[1:])])
    return _cut(text, width)


def where(cwd: object, root: str) -> str | None:
    """A working directory as a person tells two runs apart by it: relative to the
    project's root (``.``, ``src/pkg``), absolute when outside it (another worktree)."""
    if not isinstance(cwd, str) or not cwd:
        return None
    relative = os.path.relpath(cwd, root)
    return cwd if relative == ".." or relative.startswith("../") else relative
