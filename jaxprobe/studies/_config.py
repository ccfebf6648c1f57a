"""The configuration kit both studies share: TOML tables merged over documented defaults (unknown
keys and wrong kinds are ConfigErrors naming the key path), the keys a user set, the devices check
and the stage fingerprint. Each study's defaults and rules live next to its runner
(``sweep/config.py``, ``hear/config.py``).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import tomllib
from pathlib import Path
from typing import Any

from jaxprobe.errors import ConfigError

__all__ = ["check_devices", "fingerprint", "given_keys", "merge_tables", "read_toml"]


# list keys whose default is empty: the type their elements must have
_LIST_ITEMS = {"snrs": "number", "noises": "str", "values": "number", "layers": "str"}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_items(where: str, key: str, v: list, d: list) -> None:
    """Every element of a list value has the kind of the default's elements."""
    kind = _LIST_ITEMS.get(key) or ("number" if d and _is_number(d[0]) else "str" if d else None)
    if kind is None:
        return
    ok = _is_number if kind == "number" else (lambda x: isinstance(x, str))
    bad = [x for x in v if not ok(x)]
    if bad:
        what = "a list of numbers" if kind == "number" else "a list of strings"
        raise ConfigError(f"Configuration key '{where}' must be {what}; got {v!r} (bad element {bad[0]!r}).")
    if kind == "number":
        nonfinite = [x for x in v if not math.isfinite(x)]
        if nonfinite:
            raise ConfigError(f"Configuration key '{where}' must hold finite numbers; got {v!r}.")


def merge_tables(base: dict, over: dict, path: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        where = f"{path}.{k}" if path else k
        if k not in base:
            raise ConfigError(f"Unknown configuration key '{where}'. Known keys here: {', '.join(sorted(base))}.")
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise ConfigError(f"Configuration key '{where}' must be a table; got {type(v).__name__}.")
            out[k] = merge_tables(base[k], v, where)
        else:
            d = base[k]
            ok = (
                isinstance(v, type(d))
                or (isinstance(d, float) and isinstance(v, int) and not isinstance(v, bool))
                or (k == "epsilon" and isinstance(v, (int, float)))
                or (k == "inter_layers" and isinstance(v, list))
            )
            if not ok or (isinstance(v, bool) != isinstance(d, bool)):
                raise ConfigError(
                    f"Configuration key '{where}' must be {type(d).__name__}; got {v!r} ({type(v).__name__})."
                )
            if isinstance(v, list):
                _check_items(where, k, v, d)
                if k == "snrs" and not v:  # an explicit empty grid is a mistake, not "use the default"
                    raise ConfigError(f"Configuration key '{where}' must hold at least one SNR; got []. "
                                      "Leave the key out to use the snr_min..snr_max range.")
            elif isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"Configuration key '{where}' must be a finite number; got {v!r}.")
            out[k] = v
    return out


def check_devices(value: str, key: str = "compute.devices") -> int:
    """The number of JAX devices ``value`` ("all" or a count) asks for, checked against the
    devices JAX sees; ConfigError (naming ``key``) when there are fewer. Call it before any work."""
    import jax

    have = jax.device_count()
    value = str(value)
    if value == "all":
        return have
    if not (value.isdigit() and int(value) >= 1):
        raise ConfigError(f"Configuration key '{key}' must be 'all' or a device count >= 1; got {value!r}.")
    if int(value) > have:
        raise ConfigError(
            f"Configuration key '{key}' (--devices) asks for {value} devices; JAX sees {have} "
            f"({jax.devices()[0].platform}). Use --devices all, a count <= {have}, or on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={value} before starting.")
    return int(value)


def read_toml(path: Path) -> dict:
    """A config file's tables; invalid TOML is a ConfigError naming the file."""
    with open(path, "rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def given_keys(tables: dict, path: str = "") -> set[str]:
    """Dotted paths of the values a user table sets explicitly."""
    out = set()
    for k, v in tables.items():
        where = f"{path}.{k}" if path else k
        out |= given_keys(v, where) if isinstance(v, dict) else {where}
    return out


def fingerprint(obj: Any) -> str:
    """Stable short hash of a JSON-able object (stage cache keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
