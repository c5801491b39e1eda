"""``medmodal import FORMAT SRC OUT``: a public collection (or your own copy of one) -> a manifest folder.

``medmodal import --list`` lists the formats; each format's flags come from
:data:`medmodal.data.importers.registry.FORMATS`. ``import-openi`` and
``import-vqa-rad`` are kept as aliases of ``import openi`` / ``import vqa-rad``.
"""

from __future__ import annotations

import argparse
import json

from medmodal.data.importers.registry import FORMATS, ImportFormat, get_format
from medmodal.errors import UsageError

ALIASES = {"import-openi": "openi", "import-vqa-rad": "vqa-rad"}


def cmd_import(args: argparse.Namespace) -> None:
    if args.list or not args.import_format:
        if not args.list:
            raise UsageError("name a FORMAT (medmodal import FORMAT SRC OUT); formats: " + ", ".join(FORMATS))
        print(format_list())
        return
    fmt = get_format(args.import_format)
    options = {o.keyword: getattr(args, o.keyword) for o in fmt.options}
    result = fmt.run(args.source, args.out, **options)
    print(json.dumps(result.summary(), indent=2, default=str))


def format_list() -> str:
    """One line per format: name, what it reads."""
    width = max(len(name) for name in FORMATS)
    return "\n".join(f"{name:<{width}}  {fmt.summary}" for name, fmt in FORMATS.items())


def _add_format_arguments(p: argparse.ArgumentParser, fmt: ImportFormat) -> None:
    p.add_argument("source", metavar="SRC", help=fmt.source)
    p.add_argument("out", metavar="OUT", help="output folder (manifest.csv is written there)")
    for option in fmt.options:
        if option.is_switch:
            p.add_argument(
                option.flag, dest=option.keyword, action="store_true", default=None, help=option.help
            )
        else:
            p.add_argument(option.flag, dest=option.keyword, type=option.type or str, choices=option.choices,
                           default=option.default, required=option.required, help=option.help)  # fmt: skip
    p.set_defaults(func=cmd_import, import_format=fmt.name, list=False)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="convert a public data set's release (or your copy) into a manifest folder",
                       description="medmodal import FORMAT SRC OUT; medmodal import --list; "
                                   "medmodal import FORMAT --help for a format's options. See docs/importers.md.")  # fmt: skip
    p.add_argument("--list", action="store_true", help="list the formats")
    p.set_defaults(func=cmd_import, import_format=None)
    formats = p.add_subparsers(dest="import_format", metavar="FORMAT")
    for fmt in FORMATS.values():
        _add_format_arguments(formats.add_parser(fmt.name, help=fmt.summary, description=fmt.summary), fmt)
    for alias, name in ALIASES.items():
        fmt = FORMATS[name]
        _add_format_arguments(sub.add_parser(alias, help=f"same as `medmodal import {name}`"), fmt)
