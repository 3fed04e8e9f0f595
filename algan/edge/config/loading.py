"""Reading a config file: YAML, ``${NAME}`` / ``${NAME:-default}`` / ``${file:PATH}`` substitution, validation,
then relative paths (model, sources, outbox, journals, snapshots) and secrets (password_file, TLS files) resolved."""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from algan.edge.config.edge import EdgeConfig
from algan.edge.config.errors import SECRET_KEY_RE, format_validation_error, one_line, yaml_line
from algan.edge.errors import ConfigError
from algan.edge.logs import register_secret, register_url_secrets
from algan.runtime.signing import KEY_PREFIX, parse_public_key

#: Largest config file read (bytes): a real one is a few kB; a bigger one is refused before it is parsed.
MAX_CONFIG_BYTES = 1 << 20
#: Most YAML nodes a config may hold once its aliases (``*name``) are expanded: a real config has a few hundred;
#: an "alias bomb" (a few hundred bytes that expand to billions of nodes) is refused before anything walks it.
MAX_CONFIG_NODES = 50_000

#: ``${NAME}``, ``${NAME:-default}`` and ``${file:PATH}`` in string values (``$${`` = a literal ``${``).
SUBST_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _read_password(cfg: EdgeConfig, base: Path) -> EdgeConfig:
    pf = cfg.mqtt.password_file
    if pf is None:
        return cfg
    if not pf.is_absolute():
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        pf = Path(creds) / pf if creds else base / pf
    try:
        password = pf.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError) as e:
        reason = "file is empty" if isinstance(e, IndexError) else (e.strerror or str(e))
        raise ConfigError(f"config error: mqtt.password_file: cannot read {pf} ({reason}); fix the path") from e
    mqtt = cfg.mqtt.model_copy(update={"password": password, "password_file": None})
    return cfg.model_copy(update={"mqtt": mqtt})


def _resolve_paths(cfg: EdgeConfig, base: Path) -> EdgeConfig:
    model = cfg.model if cfg.model.is_absolute() else base / cfg.model
    cams = []
    for cam in cfg.cameras:
        if cam.resolved_kind in ("file", "folder") and isinstance(cam.source, str) and "://" not in cam.source:
            src = Path(cam.source).expanduser()
            cam = cam.model_copy(update={"source": str(src if src.is_absolute() else base / src)})
        cams.append(cam)
    return cfg.model_copy(update={"model": model, "cameras": cams})


def _read_trusted_keys(cfg: EdgeConfig, base: Path) -> EdgeConfig:
    """``model.trusted_keys`` entries that are files (a ``.pub`` from ``algan-edge keygen``; relative to the config's
    directory) replaced by the key they hold."""
    keys = []
    for i, k in enumerate(cfg.model_trusted_keys):
        if k.strip().startswith(KEY_PREFIX):
            keys.append(k.strip())
            continue
        p = Path(k).expanduser()
        p = p if p.is_absolute() else base / p
        try:
            text = p.read_text(encoding="utf-8").strip()
            parse_public_key(text)
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config error: model.trusted_keys[{i}]: cannot read {p} "
                              f"({getattr(e, 'strerror', None) or e}); give a .pub file from algan-edge keygen or the "
                              "key itself ('ed25519:...')") from None
        except ValueError as e:
            raise ConfigError(f"config error: model.trusted_keys[{i}]: {p}: {e}") from None
        keys.append(text.split()[0])
    return cfg.model_copy(update={"model_trusted_keys": tuple(keys)}) if keys else cfg


def _credential_path(p: Path, base: Path) -> Path:
    if p.is_absolute():
        return p
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(creds) / p if creds else base / p


def _resolve_mqtt_alarm_paths(cfg: EdgeConfig, base: Path) -> EdgeConfig:
    """Resolve (and check readable) TLS files; resolve the outbox file, the watched folders' journals and the
    snapshot directory."""
    mqtt = cfg.mqtt
    if mqtt.tls is not None:
        files = {}
        for key in ("ca_file", "cert_file", "key_file"):
            p = getattr(mqtt.tls, key)
            if p is None:
                continue
            p = _credential_path(p.expanduser(), base)
            try:
                with p.open("rb"):
                    pass
            except OSError as e:
                msg = f"config error: mqtt.tls.{key}: cannot read {p} ({e.strerror or e}); fix the path"
                raise ConfigError(msg) from None
            files[key] = p
        mqtt = mqtt.model_copy(update={"tls": mqtt.tls.model_copy(update=files)})
    state = os.environ.get("STATE_DIRECTORY")
    state_base = Path(state.split(":")[0]) if state else base

    def state_path(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else state_base / p

    ob = state_path(mqtt.outbox.path or Path(cfg.device_id) / "outbox.sqlite")
    mqtt = mqtt.model_copy(update={"outbox": mqtt.outbox.model_copy(update={"path": ob})})
    cams = [c.model_copy(update={"journal": state_path(c.journal)}) if c.journal is not None else c
            for c in cfg.cameras]
    alarm = cfg.alarm
    if alarm.snapshots is not None and not alarm.snapshots.dir.expanduser().is_absolute():
        snaps = alarm.snapshots.model_copy(update={"dir": base / alarm.snapshots.dir.expanduser()})
        alarm = alarm.model_copy(update={"snapshots": snaps})
    return cfg.model_copy(update={"mqtt": mqtt, "alarm": alarm, "cameras": cams})


def _substitute(data: Any, path: Path, root: yaml.Node | None, env: typing.Mapping[str, str] | None = None,
                loc: tuple[Any, ...] = ()) -> Any:
    """Replace ``${NAME}``, ``${NAME:-default}`` and ``${file:PATH}`` in every string value of parsed YAML.

    ``${NAME}``: the environment variable NAME (an unset one is an error; ``${NAME:-default}`` falls back to
    ``default`` when NAME is unset or empty). ``${file:PATH}``: the first line of the file PATH, stripped; a relative
    PATH is looked up in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) if set, else next to the config
    file. ``$${`` gives a literal ``${``. Values read with ``${file:...}`` and values substituted into keys named like
    a password are registered as secrets (masked in every log line, see :func:`algan.edge.logs.redact`). Results
    are strings; pydantic converts them where a number is expected (``port: ${PORT}`` -> 1883).

    Raises:
        ConfigError: unknown variable, unreadable file or bad ``${...}`` syntax; one line naming the file, line and
            field.
    """
    env = os.environ if env is None else env
    if isinstance(data, dict):
        return {k: _substitute(v, path, root, env, (*loc, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute(v, path, root, env, (*loc, i)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data
    secret = any(isinstance(p, str) and SECRET_KEY_RE.search(p) for p in loc)

    def fail(what: str) -> ConfigError:
        line = yaml_line(root, loc)
        pos = f"{path}:{line}" if line else str(path)
        where = ".".join(str(p) for p in loc) or "(top level)"
        return ConfigError(one_line(f"config error: {pos}: {where}: {what}"))

    def one(m: re.Match) -> str:
        if m.group(0) == "$${":
            return "${"
        ref = m.group(1)
        if ref.startswith("file:"):
            if not ref[5:].strip():
                raise fail("${file:} needs a file name, e.g. ${file:camera_password}")
            name = Path(ref[5:].strip()).expanduser()
            fp = _credential_path(name, path.resolve().parent)
            try:
                value = fp.read_text(encoding="utf-8").splitlines()[0].strip()
            except (OSError, IndexError, UnicodeDecodeError) as e:
                reason = "file is empty" if isinstance(e, IndexError) else getattr(e, "strerror", None) or str(e)
                raise fail(f"${{file:{ref[5:].strip()}}}: cannot read {fp} ({reason}); fix the path or the "
                           "systemd LoadCredential= line") from None
            register_secret(value)
            return value
        name, sep, default = ref.partition(":-")
        if not ENV_NAME_RE.match(name):
            raise fail(f"bad reference ${{{ref}}}; write ${{NAME}}, ${{NAME:-default}} or ${{file:PATH}} "
                       "(or $${ for a literal ${)")
        value = env.get(name)
        if not value and sep:
            value = default
        if value is None:
            raise fail(f"environment variable {name} is not set; set it (e.g. Environment={name}=... in the systemd "
                       f"unit) or give a default: ${{{name}:-value}}")
        if secret:
            register_secret(value)
        return value

    return SUBST_RE.sub(one, data)


def _register_url_secrets(data: Any) -> None:
    """Register the password of every ``user:password@`` URL in the config's string values as a secret."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and "@" in item:
            register_url_secrets(item)


def parse_config(data: Any, path: Path = Path("<config>"), root: yaml.Node | None = None) -> EdgeConfig:
    """Validate already-parsed YAML data.

    Raises:
        ConfigError: one line naming the field path and how to fix it.
    """
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        msg = f"config error: {path}: expected a mapping of settings (device_id, model, cameras...), got {got}"
        raise ConfigError(msg)
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, path, root)) from None


def load_config(path: str | Path) -> EdgeConfig:
    """Read, validate and resolve an edge config file.

    Args:
        path: YAML file.

    ``${NAME}``, ``${NAME:-default}`` and ``${file:PATH}`` in string values are substituted first (see
    :func:`_substitute`).

    Returns:
        The validated config with relative paths resolved against the file's directory and ``mqtt.password_file``
        read into ``mqtt.password``.

    Raises:
        ConfigError: missing/unreadable file, YAML syntax error or schema error; the text is one line.
    """
    try:
        return _load_config(Path(path))
    except ConfigError as e:  # every message one line, whatever odd characters a key, value or path holds
        raise ConfigError(one_line(str(e))) from None


def expanded_nodes(root: yaml.Node | None, limit: int = MAX_CONFIG_NODES) -> int:
    """How many nodes the YAML document ``root`` holds with every alias expanded (a node reached through ``n``
    aliases counts ``n`` times), counted without expanding anything: each node's size is computed once.

    Raises:
        ValueError: the count passes ``limit``, or an alias refers to a node that contains it (endless expansion).
    """
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)] if root is not None else []
    while stack:  # post-order without recursion: deep nesting cannot exhaust the Python stack
        node, done = stack.pop()
        key = id(node)
        if done:
            children = _children(node)
            total = 1 + sum(sizes[id(c)] for c in children)
            if total > limit:
                raise ValueError(f"expands to more than {limit} values (aliases '*name' repeating anchored blocks)")
            sizes[key] = total
            open_.discard(key)
            continue
        if key in sizes:
            continue
        if key in open_:
            raise ValueError("an alias refers to a block that contains it (endless expansion)")
        open_.add(key)
        stack.append((node, True))
        for c in _children(node):
            if id(c) in open_:
                raise ValueError("an alias refers to a block that contains it (endless expansion)")
            if id(c) not in sizes:
                stack.append((c, False))
    return sizes.get(id(root), 0)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for kv in node.value for n in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _read_text(path: Path) -> str:
    """The config file's text, refusing a file over :data:`MAX_CONFIG_BYTES` before reading it whole."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        msg = f"config error: cannot read {path} ({e.strerror or e}); check the path given to --config"
        raise ConfigError(msg) from None
    if len(raw) > MAX_CONFIG_BYTES:
        msg = (f"config error: {path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; an edge config is a few kB: "
               "check that --config names the YAML file")
        raise ConfigError(msg)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        msg = f"config error: {path}: not UTF-8 text (byte {e.start}); save the config as UTF-8 YAML"
        raise ConfigError(msg) from None


def _load_config(path: Path) -> EdgeConfig:
    text = _read_text(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        try:
            expanded_nodes(root)
        except ValueError as e:
            raise ConfigError(f"config error: {path}: {e}; write the settings out instead") from None
        data = yaml.SafeLoader(text).construct_document(root) if root is not None else None
    except RecursionError:
        raise ConfigError(f"config error: {path}: nested too deeply; an edge config has a few levels") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        pos = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        msg = f"config error: {pos}: YAML syntax error: {problem}; fix the indentation/quoting there"
        raise ConfigError(msg) from None
    data = _substitute(data, path, root)
    _register_url_secrets(data)  # before anything rewrites a value (validation messages, path resolution)
    cfg = parse_config(data, path, root)
    base = path.resolve().parent
    cfg = _resolve_mqtt_alarm_paths(_read_password(_resolve_paths(cfg, base), base), base)
    cfg = _read_trusted_keys(cfg, base)
    register_secret(cfg.mqtt.password)
    return cfg
