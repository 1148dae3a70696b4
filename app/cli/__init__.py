"""The ``buildkite-controller`` command: ``serve`` (default), ``render``, ``lint``, ``simulate``, ``demo``."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence

from app.config import CONFIG_ENV, FLAG_ALIASES, OPTIONS
from app.errors import ConfigInvalid


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not args or (args[0].startswith("-") and args[0] not in {"-h", "--help"}):
        args.insert(0, "serve")
    namespace = parser.parse_args(args)
    try:
        return int(namespace.handler(namespace) or 0)
    except ConfigInvalid as exc:
        print(f"buildkite-controller: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="buildkite-controller",
        description="Run Buildkite jobs as Kubernetes pods.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="run the controller service (default)", formatter_class=_UnbrokenHelpFormatter
    )
    _add_setting_flags(serve)
    serve.set_defaults(handler=_serve)
    from app.cli.render import add_render_commands

    add_render_commands(commands)
    from app.simulate.cli import add_simulate_command

    add_simulate_command(commands)
    from app.cli.demo import add_demo_command

    add_demo_command(commands)
    return parser


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--config",
        help=f"YAML config file (agent-stack-k8s keys accepted) [env {', '.join(CONFIG_ENV)}]",
    )
    for option in OPTIONS:
        names = [f"--{option.key}"] + [
            f"--{alias}" for alias, key in FLAG_ALIASES.items() if key == option.key
        ]
        help_text = option.help_line
        if option.kind == "bool":
            parser.add_argument(
                *names,
                dest=_dest(option.key),
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                *names,
                dest=_dest(option.key),
                default=None,
                help=help_text,
                metavar=_METAVARS.get(option.kind, "VALUE"),
                type=int if option.kind == "int" else str,
            )


class _UnbrokenHelpFormatter(argparse.HelpFormatter):
    """Wraps help between words only, so a long variable name stays whole (and searchable)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_long_words=False, break_on_hyphens=False)


_METAVARS = {"int": "N", "float": "NUMBER", "duration": "DURATION", "list": "A,B"}


def _dest(key: str) -> str:
    return "opt_" + key.replace("-", "_")


def setting_flags(namespace: argparse.Namespace) -> dict[str, object]:
    """The setting flags given on the command line, keyed by option key."""
    return {option.key: getattr(namespace, _dest(option.key), None) for option in OPTIONS}


def _serve(namespace: argparse.Namespace) -> int:
    from app.cli.serve import run

    return run(flags=setting_flags(namespace), config_file=namespace.config)
