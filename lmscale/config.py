"""Config files (`configs/*.py` returning an ml_collections ConfigDict) and overrides.

`--config.train.steps=100` sets one field; the value is parsed to the type the field
already has. Unknown keys are errors that name the nearest valid key.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
from typing import Any
from collections.abc import Sequence

import ml_collections

from lmscale.errors import ConfigError


def load_config_file(path: str) -> ml_collections.ConfigDict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist (see configs/ for recipes)")
    spec = importlib.util.spec_from_file_location(f"lmscale_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} defines no get_config()")
    config = module.get_config()
    if not config.get("name"):
        config.name = os.path.splitext(os.path.basename(path))[0]
    return config


def _all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_all_keys(value, full + "."))
    return keys


def _unknown_key(config: ml_collections.ConfigDict, key: str) -> ConfigError:
    close = difflib.get_close_matches(key, _all_keys(config), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


def _parse_value(text: str, current: Any, key: str) -> Any:
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"config key '{key}' takes true or false, got {text!r}")
    if isinstance(current, str) or current is None:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        return value if current is None else text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ConfigError(
            f"config key '{key}' expects {type(current).__name__}, got {text!r}") from None
    if isinstance(current, float) and isinstance(value, int):
        value = float(value)
    if isinstance(current, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(current)(value)
    if isinstance(current, (list, tuple)) and isinstance(value, str):
        return type(current)([value])
    if not isinstance(value, type(current)):
        raise ConfigError(
            f"config key '{key}' expects {type(current).__name__}, got {text!r}")
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Apply `KEY=VALUE` strings (the `--config.` prefix already removed)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like --config.KEY=VALUE")
        key, text = item.split("=", 1)
        node = config
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                raise _unknown_key(config, key)
            if i < len(parts) - 1:
                node = node[part]
        current = node[parts[-1]]
        if isinstance(current, ml_collections.ConfigDict):
            raise ConfigError(f"config key '{key}' is a section; set one of its fields")
        with node.unlocked():
            node[parts[-1]] = _parse_value(text, current, key)


def check_keys(config: ml_collections.ConfigDict, template: ml_collections.ConfigDict) -> None:
    """Every key of `config` must exist in `template` (catches typos in config files)."""
    for key in _all_keys(config):
        node = template
        for part in key.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                raise _unknown_key(template, key)
            node = node[part]


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)
