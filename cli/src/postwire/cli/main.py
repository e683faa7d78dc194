"""`postwire` subcommands: run, account create, smtp-login set/show, domain add/list, db upgrade,
inline-css."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from postwire.cli.settings import CliSettings

# an SMTP login's default switches, as `smtp-login set` flags (postwire.db.accounts.SWITCHES)
SMTP_SWITCHES = ("inline-css", "track-clicks", "track-opens", "track-bounces", "prevent-scam")

def _database_url(settings: CliSettings) -> str:
    """POSTWIRE_DATABASE_URL when set, else the local run's embedded PostgreSQL (started if needed)."""
    if "POSTWIRE_DATABASE_URL" in os.environ:
        return settings.database_url
    from postwire.cli.embedded import start_postgres

    return start_postgres(settings.data_dir).url


def cmd_run(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.stack import run_stack

    return run_stack(settings)


def cmd_account_create(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.accounts import AccountExists, create_account

    try:
        creds = asyncio.run(create_account(_database_url(settings), args.name))
    except AccountExists:
        print(f"postwire: an account named {args.name!r} already exists", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(creds.as_dict()))
    else:
        print(f"account   {creds.account_id} ({creds.name})\napi key   {creds.api_key}\n"
              f"smtp user {creds.smtp_username}\nsmtp pass {creds.smtp_password}\n"
              "These secrets are shown once; only their hashes are stored.")
    return 0


def cmd_smtp_login_set(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.accounts import LoginNotFound, login_as_json, login_as_text, set_login

    given = {flag: getattr(args, flag.replace("-", "_")) for flag in SMTP_SWITCHES}
    changes = {flag.replace("-", "_"): value == "on" for flag, value in given.items() if value is not None}
    if not changes:
        print("postwire: nothing to set: give at least one of "
              + ", ".join(f"--{flag}" for flag in SMTP_SWITCHES), file=sys.stderr)
        return 2
    try:
        login = asyncio.run(set_login(_database_url(settings), args.username, changes))
    except LoginNotFound:
        print(f"postwire: no SMTP login named {args.username!r}", file=sys.stderr)
        return 1
    print(json.dumps(login_as_json(login)) if args.json else login_as_text(login))
    return 0


def cmd_smtp_login_show(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.accounts import LoginNotFound, login_as_json, login_as_text, show_login

    try:
        login = asyncio.run(show_login(_database_url(settings), args.username))
    except LoginNotFound:
        print(f"postwire: no SMTP login named {args.username!r}", file=sys.stderr)
        return 1
    print(json.dumps(login_as_json(login)) if args.json else login_as_text(login))
    return 0


def cmd_domain_add(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.domains import ALGORITHM_NAMES, AccountNotFound, add, as_json, as_text
    from postwire.db.domains import DomainExists, InvalidDomain

    try:
        info, records = asyncio.run(add(_database_url(settings), args.account, args.name,
                                        ALGORITHM_NAMES[args.algorithm], settings))
    except AccountNotFound:
        print(f"postwire: no account with the name or id {args.account!r}", file=sys.stderr)
        return 1
    except InvalidDomain as e:
        print(f"postwire: {e}", file=sys.stderr)
        return 2
    except DomainExists as e:
        owner = "this account" if e.same_account else "another account"
        print(f"postwire: {e.name} is already registered by {owner}", file=sys.stderr)
        return 1
    print(json.dumps(as_json(info, records)) if args.json else as_text(info, records))
    return 0


def cmd_domain_list(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.domains import AccountNotFound, as_json, as_text, list_all

    try:
        domains = asyncio.run(list_all(_database_url(settings), args.account, settings))
    except AccountNotFound:
        print(f"postwire: no account with the name or id {args.account!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([as_json(info, records) for info, records in domains]))
    else:
        print("\n\n".join(as_text(info, records) for info, records in domains) or "no domains")
    return 0


def cmd_db_upgrade(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.db.migrate import upgrade

    upgrade(_database_url(settings))
    return 0


def cmd_bounce_classify(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.bounce_classifier.__main__ import main as classify

    return classify(args.files)


def cmd_inline_css(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.transformer.inline import inline_html

    html = Path(args.file).read_text(encoding="utf-8")
    css = Path(args.css).read_text(encoding="utf-8") if args.css else None
    sys.stdout.write(inline_html(html, css, engine=args.engine))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="postwire", description="Postwire email relay")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the whole system locally (embedded NATS and PostgreSQL)").set_defaults(
        func=cmd_run)
    account = sub.add_parser("account", help="manage accounts").add_subparsers(dest="action", required=True)
    create = account.add_parser("create", help="create an account with an API key and an SMTP login")
    create.add_argument("name")
    create.add_argument("--json", action="store_true", help="print the credentials as one JSON object")
    create.set_defaults(func=cmd_account_create)
    smtp_login = sub.add_parser(
        "smtp-login", help="an SMTP login's default switches",
        description="Each SMTP login has default switches for the messages it submits; a message's "
                    "x-smtpeter-* / X-Postwire-* headers override them (docs/smtp.md).",
    ).add_subparsers(dest="action", required=True)
    login_set = smtp_login.add_parser(
        "set", help="change default switches",
        description="Change some of a login's default switches. Sessions that log in afterwards get them; "
                    "ingest-smtp remembers a verified login for POSTWIRE_SMTP_AUTH_CACHE_TTL_S (60 s by "
                    "default), so a change can take that long to reach new sessions.")
    login_set.add_argument("username", help="the SMTP login (smtp_username of `account create`)")
    for flag in SMTP_SWITCHES:
        login_set.add_argument(f"--{flag}", choices=["on", "off"])
    login_set.add_argument("--json", action="store_true", help="print the login as one JSON object")
    login_set.set_defaults(func=cmd_smtp_login_set)
    login_show = smtp_login.add_parser("show", help="print a login's account and default switches")
    login_show.add_argument("username", help="the SMTP login")
    login_show.add_argument("--json", action="store_true", help="print the login as one JSON object")
    login_show.set_defaults(func=cmd_smtp_login_show)
    domain = sub.add_parser("domain", help="sending domains and their DKIM keys").add_subparsers(
        dest="action", required=True)
    add = domain.add_parser("add", help="register a domain with a new DKIM key; prints the DNS records")
    add.add_argument("name", help="the domain, e.g. example.com (IDN allowed)")
    add.add_argument("--account", required=True, help="account name or id")
    add.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa",
                     help="DKIM key: RSA-2048 (default; every receiver verifies it) or Ed25519 (RFC 8463)")
    add.add_argument("--json", action="store_true", help="print the domain as one JSON object")
    add.set_defaults(func=cmd_domain_add)
    ls = domain.add_parser("list", help="list domains with the DNS records to publish")
    ls.add_argument("--account", help="only this account's (name or id)")
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    ls.set_defaults(func=cmd_domain_list)
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="apply all migrations").set_defaults(func=cmd_db_upgrade)
    bounce = sub.add_parser("bounce", help="bounce mails").add_subparsers(dest="action", required=True)
    classify = bounce.add_parser("classify", help="print one JSON line per bounced recipient of each FILE")
    classify.add_argument("files", nargs="+", metavar="FILE")
    classify.set_defaults(func=cmd_bounce_classify)
    inline = sub.add_parser("inline-css", help="print an HTML document with its CSS inlined")
    inline.add_argument("file")
    inline.add_argument("--css", help="extra stylesheet to apply")
    inline.add_argument("--engine", default="css-inline", choices=["css-inline", "premailer"])
    inline.set_defaults(func=cmd_inline_css)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    sys.exit(args.func(args, CliSettings()))
