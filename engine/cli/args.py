"""The render options' declaration (request.RenderRequest) as argparse arguments: igan-render
and the applications add them from there, so an option declared once is on every command
line that renders."""
from __future__ import annotations

import argparse

from ..request import GROUPS, declared, flag


def add_request_options(parser: argparse.ArgumentParser, names=None, *, overrides: dict | None = None,
                        titles: dict | None = None) -> dict[str, argparse._ArgumentGroup]:
    """Add the declared render options (all but the internal ones, or those in `names`) to
    `parser`, one argument group per declared group, in declaration order; `overrides`:
    {name: {"help": ..., "choices": ...}} where a command narrows an option. Returns the
    groups by name (each exists, so a command can add its own options to them)."""
    overrides = overrides or {}
    groups = {g: parser.add_argument_group((titles or {}).get(g, title)) for g, title in GROUPS.items() if title}
    for f in declared():
        if names is not None and f.name not in names:
            continue
        meta = f.metadata | overrides.get(f.name, {})
        kw = dict(dest=f.name, default=f.default, help=meta["help"])
        if isinstance(f.default, bool):
            kw["action"] = "store_false" if f.default else "store_true"
        else:
            for key in ("choices", "metavar"):
                if meta[key]:
                    kw[key] = list(meta[key]) if key == "choices" else meta[key]
            if meta["parse"]:
                kw["type"] = meta["parse"]
            if meta["const"] is not None:
                kw |= dict(nargs="?", const=meta["const"])
        groups[meta["group"]].add_argument(flag(f), **kw)
    return groups
