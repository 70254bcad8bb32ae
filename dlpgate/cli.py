"""`dlpgate` command line (contract: DESIGN.md).

Every subcommand accepts `--config FILE`, before or after its other arguments, so the CLI finds
the same store as the server. Any DlpgateError becomes one plain line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from . import eventloop
from .config import Config, load_config
from .errors import DlpgateError

Command = Callable[[argparse.Namespace, Config], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"dlpgate: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                   help="TOML configuration (embedded defaults without it)")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="dlpgate", description="Outbound email DLP gateway", parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("auth", help="SMTP AUTH users file: auth add|remove|list FILE [LOGIN] [--password-stdin]")

    p = sub.add_parser("serve", parents=[common], help="run the gateway")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("scan", parents=[common], help="offline scan of .eml files or attachments")
    p.add_argument("--json", action="store_true", help="one JSON object per PATH")
    p.add_argument("--rules", metavar="DIR", help="rules directory (default: the configured one)")
    p.add_argument("--explain", action="store_true", help="show which rule fired and why")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=cmd_scan)

    rules = sub.add_parser("rules", parents=[common], help="rule files")
    rsub = rules.add_subparsers(dest="rules_command", required=True, parser_class=_Parser)
    p = rsub.add_parser("check", parents=[common], help="validate rule files")
    p.add_argument("dir", nargs="?", metavar="DIR")
    p.set_defaults(func=cmd_rules_check)

    try:
        from . import admin_cli
    except ImportError:  # pragma: no cover
        admin_cli = None  # type: ignore[assignment]
    if admin_cli is not None:
        admin_cli.register(sub, common)
    from . import store_cli

    store_cli.register(sub, common)
    return parser


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from . import logs
    from .server import serve

    logs.setup(config.log.format, config.log.level)
    return eventloop.run(serve(config))


def cmd_scan(args: argparse.Namespace, config: Config) -> int:
    from .offline_scan import run

    rules_dir = args.rules or str(config.rules_path)
    return int(run(list(args.paths), as_json=args.json, rules_dir=rules_dir, explain=args.explain,
                   internal_domains=config.policy.internal_domains))


def cmd_rules_check(args: argparse.Namespace, config: Config) -> int:
    from .policy import Policy
    from .scan.scanner import Scanner

    d = args.dir or str(config.rules_path)
    Scanner.load(d)
    Policy.load(d, config.policy.internal_domains)
    print(f"rules in {d}: ok")
    from .identities import binding_problems

    for line in binding_problems(config):  # who may approve: fail closed, said in one line each
        print(f"warning: {line}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["auth"]:  # users file for SMTP AUTH: its own small tool, no store or config needed
        from .auth import main as auth_main

        return auth_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    # everything the gateway writes (DB, its WAL and SHM files, spool, notices) is the service's
    # alone; restored afterwards for in-process callers (tests, scripts)
    old_umask = os.umask(0o077)
    try:
        config = load_config(getattr(args, "config", None))
        return int(args.func(args, config))
    except DlpgateError as e:
        print(f"dlpgate: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        os.umask(old_umask)


if __name__ == "__main__":
    raise SystemExit(main())
