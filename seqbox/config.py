"""Resolve ``seqbox run``'s options from every layer.

Precedence, highest first: command line > ``SEQBOX_*`` environment > the old
recipe's variables (``MEMORY_LIMIT_MB``, ``TIMEOUT``, ``KILL_TIMEOUT``,
``CHECK_INTERVAL``) > the chosen profile > the config file > defaults.

The config is ``seqbox.toml`` at the project root (keys at top level,
``[profiles.NAME]`` tables) or ``[tool.seqbox]`` in the project's pyproject.toml
(``[tool.seqbox.profiles.NAME]``). When both exist, seqbox.toml wins.
"""

from __future__ import annotations

import os
import sys

from seqbox.errors import ConfigError, UsageError
from seqbox.options import CONFIG_KEYS, NO_SLOT_CAP, OPTIONS, RunOptions, parse_value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def _megabytes(value: str) -> str:
    return f"{value}M" if value.strip().isdigit() else value


def _as_is(value: str) -> str:
    return value


#: the old recipe's variable -> (option key, how to read its value)
RECIPE_VARIABLES = {
    "MEMORY_LIMIT_MB": ("mem", _megabytes),
    "TIMEOUT": ("timeout", _as_is),
    "KILL_TIMEOUT": ("grace", _as_is),
    "CHECK_INTERVAL": ("poll_interval", _as_is),
}


class FileConfig:
    """What a project's config file says: top-level keys and profiles."""

    __slots__ = ("path", "prefix", "profiles", "profiles_prefix", "top")

    def __init__(
        self,
        path: str | None,
        top: dict[str, object],
        profiles: dict[str, dict[str, object]],
        prefix: str = "",
        profiles_prefix: str = "profiles",
    ) -> None:
        self.path = path
        self.top = top
        self.profiles = profiles
        self.prefix = prefix
        self.profiles_prefix = profiles_prefix


def load_file_config(root: str, environ: Mapping[str, str] | None = None) -> FileConfig:
    """Read ``seqbox.toml`` or ``[tool.seqbox]`` from the project root (with
    ``environ``, through the parsed-config cache in the state directory)."""
    toml_path = os.path.join(root, "seqbox.toml")
    if os.path.isfile(toml_path):
        data = _load_toml(toml_path, _read(toml_path), environ)
        return _split(toml_path, data, prefix="", profiles_prefix="profiles")
    pyproject = os.path.join(root, "pyproject.toml")
    if os.path.isfile(pyproject):
        text = _read(pyproject)
        if "tool.seqbox" not in text:  # skip tomllib's 15 ms import when we are not configured
            return FileConfig(None, {}, {})
        tool = _load_toml(pyproject, text, environ).get("tool", {})
        section = tool.get("seqbox") if isinstance(tool, dict) else None
        if section is None:
            return FileConfig(None, {}, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{pyproject}: [tool.seqbox] must be a table")
        return _split(pyproject, section, prefix="tool.seqbox.", profiles_prefix="tool.seqbox.profiles")
    return FileConfig(None, {}, {})


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None


def _load_toml(path: str, text: str, environ: Mapping[str, str] | None = None) -> dict[str, object]:
    cache = None if environ is None else ParsedCache(path, environ)
    if cache is not None:
        cached = cache.get(text)
        if cached is not None:
            return cached
    data = _parse_toml(path, text)
    if cache is not None:
        cache.put(text, data)
    return data


class ParsedCache:
    """What a config file's text parsed to, kept in the state directory
    (``config/``): importing tomllib costs every run of a configured project
    about 10 ms, reading this back (marshal) a few microseconds. An entry is
    used only for the very text it was parsed from. Best effort: any problem
    with it only means parsing again."""

    def __init__(self, path: str, environ: Mapping[str, str]) -> None:
        from seqbox.project import project_key

        self.name = f"{project_key(os.path.dirname(path))}-{os.path.basename(path)}"
        self.environ = environ

    def _dir(self) -> int | None:
        from seqbox.errors import StateError
        from seqbox.state import open_private_dir, open_state_dir

        try:
            state = open_state_dir(self.environ)
        except (OSError, StateError):
            return None
        try:
            return open_private_dir(state, "config", "config cache")
        except (OSError, StateError):
            return None
        finally:
            os.close(state)

    def get(self, text: str) -> dict[str, object] | None:
        import marshal

        directory = self._dir()
        if directory is None:
            return None
        try:
            fd = os.open(self.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
            try:
                stored = marshal.loads(os.read(fd, 1 << 20))
            finally:
                os.close(fd)
        except (OSError, ValueError, EOFError, TypeError):
            return None
        finally:
            os.close(directory)
        if not (isinstance(stored, tuple) and len(stored) == 2 and stored[0] == text):
            return None
        return stored[1] if isinstance(stored[1], dict) else None

    def put(self, text: str, data: dict[str, object]) -> None:
        import marshal

        try:
            blob = marshal.dumps((text, data))  # ValueError for a TOML date: not cached
        except ValueError:
            return
        directory = self._dir()
        if directory is None:
            return
        temp = f".{self.name}.{os.getpid()}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=directory)  # fmt: skip
            try:
                os.write(fd, blob)
            finally:
                os.close(fd)
            os.rename(temp, self.name, src_dir_fd=directory, dst_dir_fd=directory)
        except OSError:
            try:
                os.unlink(temp, dir_fd=directory)
            except OSError:
                pass
        finally:
            os.close(directory)


def _parse_toml(path: str, text: str) -> dict[str, object]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        data: dict[str, object] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return data


def _split(path: str, data: dict[str, object], prefix: str, profiles_prefix: str) -> FileConfig:
    top = {k: v for k, v in data.items() if k != "profiles"}
    raw_profiles = data.get("profiles", {})
    if not isinstance(raw_profiles, dict):
        raise ConfigError(f"{path}: key '{profiles_prefix}': expected a table of profiles")
    profiles: dict[str, dict[str, object]] = {}
    for name, table in raw_profiles.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: key '{profiles_prefix}.{name}': expected a table")
        profiles[name] = table
    return FileConfig(path, top, profiles, prefix, profiles_prefix)


def _check_layer(values: Mapping[str, object], where: str, key_prefix: str) -> dict[str, object]:
    parsed: dict[str, object] = {}
    for key, raw in values.items():
        if key not in CONFIG_KEYS:
            known = ", ".join(sorted(CONFIG_KEYS))
            raise ConfigError(f"{where}: unknown key '{key_prefix}{key}' (known keys: {known})")
        try:
            parsed[key] = parse_value(key, raw, f"{where}: key '{key_prefix}{key}'")
        except UsageError as err:
            raise ConfigError(err.message) from None
    return parsed


def env_layer(environ: Mapping[str, str]) -> dict[str, object]:
    """``SEQBOX_<KEY>`` variables, parsed."""
    parsed: dict[str, object] = {}
    for key in CONFIG_KEYS:
        name = "SEQBOX_" + key.upper()
        if name in environ:
            try:
                parsed[key] = parse_value(key, environ[name], name)
            except UsageError as err:
                raise ConfigError(err.message) from None
    return parsed


def recipe_layer(environ: Mapping[str, str]) -> dict[str, object]:
    """The old bash recipe's variables, so its users keep their settings."""
    parsed: dict[str, object] = {}
    for name, (key, convert) in RECIPE_VARIABLES.items():
        value = environ.get(name)
        if value:
            try:
                parsed[key] = parse_value(key, convert(value), name)
            except UsageError as err:
                raise ConfigError(err.message) from None
    return parsed


def resolve(
    cli_raw: Mapping[str, object],
    root: str,
    environ: Mapping[str, str],
) -> RunOptions:
    """Merge every layer into a :class:`RunOptions`."""
    cli = {key: parse_value(key, raw, f"--{key.replace('_', '-')}") for key, raw in cli_raw.items()}
    file_config = load_file_config(root, environ)
    where = file_config.path or "config"
    file_layer = _check_layer(file_config.top, where, file_config.prefix)

    profile_name = cli.get("profile") or environ.get("SEQBOX_PROFILE")
    explicit = profile_name is not None
    if profile_name is None and environ.get("CI", "").lower() == "true":
        profile_name = "ci"
    # every profile is checked, chosen or not: a mistake shows the day it is made
    profiles = {
        name: _check_layer(table, where, f"{file_config.profiles_prefix}.{name}.")
        for name, table in file_config.profiles.items()
    }
    profile_layer: dict[str, object] = {}
    if profile_name is not None:
        table = profiles.get(str(profile_name))
        if table is not None:
            profile_layer = table
        elif explicit:
            known = ", ".join(sorted(file_config.profiles)) or "none defined"
            raise ConfigError(f"{where}: no profile named {profile_name!r} (profiles: {known})")

    values: dict[str, object] = {}
    for opt in OPTIONS:
        values[opt.key] = parse_value(opt.key, opt.default, f"default {opt.key}")
    for layer in (file_layer, profile_layer, recipe_layer(environ), env_layer(environ), cli):
        values.update(layer)
    values["profile"] = profile_name if (explicit or profile_layer) else None
    if values["slots"] is None:  # one at a time, or as many as fit the budget
        values["slots"] = 1 if values["budget"] is None else NO_SLOT_CAP
    options = RunOptions(values)
    _check_combination(options, cli)
    return options


#: options that mean nothing without a queue: given with --no-lock, one is a mistake
_QUEUE_OPTIONS = ("lock", "slots", "budget", "wait_timeout")


def _check_combination(options: RunOptions, cli: Mapping[str, object]) -> None:
    if options.quiet and options.verbose:
        raise UsageError("-q and -v cannot be used together")
    if cli.get("no_lock"):
        for key in _QUEUE_OPTIONS:
            if key in cli:
                raise UsageError(f"--{key.replace('_', '-')} and --no-lock cannot be used together")
    if options.mem_high is not None and options.mem is not None and options.mem_high > options.mem:
        raise UsageError("--mem-high must not be above --mem")
    options.extra_env()  # validates K=V
    if options.cwd is not None and not os.path.isdir(options.cwd):
        raise UsageError(f"--cwd: not a directory: {options.cwd}")
