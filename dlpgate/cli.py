"""`dlpgate` command line (contract: DESIGN.md).

Every subcommand accepts `--config FILE`, before or after its other arguments. Without it the
config is `$DLPGATE_CONFIG`, else /etc/dlpgate/dlpgate.toml when it exists, else the embedded
defaults (`config.find_config`): one way everyone finds the running gateway's config. The variable
only says where the config is, never who the caller is.

Any DlpgateError, a usage error, or an OS error on a file named by the user becomes one plain
line on stderr and exit code 2; nothing the user typed may produce a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence

from . import eventloop
from .config import Config, find_config, load_config
from .errors import DlpgateError, InputError

Command = Callable[[argparse.Namespace, Config], int]


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, naming the command and where help is."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _say_error(f"{self.prog}: error: {message} (see {self.prog} --help)")
        raise SystemExit(2)


def _say_error(line: str) -> None:
    """One error line on stderr, masked and terminal-safe: errors quote what was typed (a path
    named after its content, a number pasted where a time was wanted), and no full identifier
    reaches the terminal."""
    from .masking import mask_text
    from .terminal import for_terminal

    print(for_terminal(mask_text(line)), file=sys.stderr)


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                   help="TOML configuration (default: $DLPGATE_CONFIG, else /etc/dlpgate/dlpgate.toml"
                        " if it exists, else the embedded defaults)")
    return p


def subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
    """Every parser below `parser` with its path of command words (tests sweep them all)."""
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, sub in action.choices.items():
                yield [name], sub
                for path, deeper in subcommands(sub):
                    yield [name, *path], deeper


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="dlpgate", description="Outbound email DLP gateway", parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    from . import auth
    from .web import accounts

    auth.register(sub, common)
    accounts.register(sub, common)

    p = sub.add_parser("serve", parents=[common], help="run the gateway")
    p.set_defaults(func=cmd_serve)

    c = sub.add_parser("config", parents=[common], help="the gateway's configuration")
    csub = c.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    p = csub.add_parser("check", parents=[common],
                        help="validate a config and the files it names; exit 2 naming the bad key")
    p.add_argument("--no-probe", action="store_true", help="do not try to reach the upstream")
    p.set_defaults(func=cmd_config_check)

    p = sub.add_parser("scan", parents=[common], help="offline scan of messages (.eml, .msg, mbox, .pst: recognised by content) or attachments")
    p.add_argument("--json", action="store_true", help="one JSON object per message (an mbox or .pst holds several)")
    p.add_argument("--rules", metavar="DIR", help="rules directory (default: the configured one)")
    p.add_argument("--explain", action="store_true", help="show which rule fired and why")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("archive", parents=[common], help="audit mail archives: mbox, Maildir, MH, .eml, .msg, .pst")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes (default 1; up to the cores)")
    p.add_argument("--since", metavar="WHEN", help="only mail dated on or after (YYYY-MM-DD or ISO 8601)")
    p.add_argument("--until", metavar="WHEN", help="only mail dated before")
    p.add_argument("--report", metavar="DIR", help="write report.html, flagged.csv, summary.csv and the checkpoint here")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from DIR's checkpoint")
    p.add_argument("--json", action="store_true", help="one JSON object per message on stdout, in archive order")
    p.add_argument("--rules", metavar="DIR", help="rules directory (default: the configured one)")
    p.add_argument("--internal-domains", action="append", metavar="DOMAIN[,DOMAIN...]", default=None,
                   help="what is internal, comma-separated or repeated (default: [policy] internal_domains)")
    p.add_argument("--progress-every", type=float, default=10.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_archive)

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
    for _, p in subcommands(parser):  # whoever registered it: usage errors in one line too
        if not isinstance(p, _Parser):
            p.__class__ = _Parser
    return parser


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from . import logs
    from .server import serve

    logs.setup(config.log.format, config.log.level)
    return eventloop.run(serve(config))


def cmd_config_check(args: argparse.Namespace, config: Config) -> int:
    import asyncio

    from .startup import preflight, probe_upstream

    summary = preflight(config)
    print(f"{config.source or 'embedded defaults (no config file given or found)'}: ok")
    for line in summary.lines():
        print(f"  {line}")
    warnings = list(summary.warnings)
    if not args.no_probe:
        why = asyncio.run(probe_upstream(config.relay.upstream, timeout=3.0))
        if why is not None:
            warnings.append(f"upstream {config.relay.upstream} does not answer ({why}):"
                            " mail will wait as deferred until it does")
    for w in warnings:
        print(f"warning: {w}")
    return 0


def cmd_scan(args: argparse.Namespace, config: Config) -> int:
    from .offline_scan import run

    rules_dir = args.rules or str(config.rules_path)
    return int(run(list(args.paths), as_json=args.json, rules_dir=rules_dir, explain=args.explain,
                   internal_domains=config.policy.internal_domains))


def cmd_archive(args: argparse.Namespace, config: Config) -> int:
    from .archive import Options, run
    from .archive.dates import parse_when

    options = Options(
        jobs=args.jobs, since=parse_when(args.since, "--since"), until=parse_when(args.until, "--until"),
        report_dir=args.report, resume=args.resume, as_json=args.json,
        rules_dir=args.rules or str(config.rules_path),
        internal_domains=tuple(d.strip() for v in args.internal_domains for d in v.split(",") if d.strip())
        if args.internal_domains is not None else tuple(config.policy.internal_domains),
        progress_every=args.progress_every,
    )
    return run(args.paths, options)


def cmd_rules_check(args: argparse.Namespace, config: Config) -> int:
    from .policy import Policy
    from .scan.scanner import Scanner

    d = args.dir or str(config.rules_path)
    if not os.path.isdir(d):
        raise InputError(f"rules directory {d} does not exist")
    Scanner.load(d)
    Policy.load(d, config.policy.internal_domains)
    print(f"rules in {d}: ok")
    from .identities import binding_problems

    for line in binding_problems(config):  # who may approve: fail closed, said in one line each
        print(f"warning: {line}")
    return 0


def _config_for(args: argparse.Namespace) -> Config:
    explicit = getattr(args, "config", None)
    if not explicit and not getattr(args, "config_needed", True):
        return Config()  # e.g. `auth`: works on the file it is given, whatever the gateway's config
    path, origin = find_config(explicit)
    try:
        return load_config(path)
    except DlpgateError as e:
        if origin not in ("--config", "embedded defaults"):
            raise type(e)(f"{e} (config from {origin})") from None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    # everything the gateway writes (DB, its WAL and SHM files, spool, notices) is the service's
    # alone; restored afterwards for in-process callers (tests, scripts)
    old_umask = os.umask(0o077)
    try:
        config = _config_for(args)
        return int(args.func(args, config))
    except DlpgateError as e:
        _say_error(f"dlpgate: {e}")
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # a file or directory the user named: what and why, in one line
        where = f"{e.filename}: " if e.filename else ""
        _say_error(f"dlpgate: {where}{e.strerror or e}")
        return 2
    except Exception as e:  # a bug: one line, the traceback only on request (or in the gateway's log)
        if os.environ.get("DLPGATE_DEBUG"):
            raise
        if args.func is cmd_serve:
            logging.getLogger("dlpgate").critical("gateway failed", exc_info=True, extra={"event": "crashed"})
        _say_error(f"dlpgate: internal error: {type(e).__name__}: {e} (DLPGATE_DEBUG=1 shows the traceback)")
        return 70
    finally:
        os.umask(old_umask)


if __name__ == "__main__":
    raise SystemExit(main())
