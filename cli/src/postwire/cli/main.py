"""`postwire` subcommands: run, account create, smtp-login set/show, api-key set, domain add/list, db
upgrade, inline-css."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from postwire.cli.settings import CliSettings, checkout_root, local_data_dir

# an SMTP login's default switches, as `smtp-login set` flags (postwire.db.accounts.SWITCHES)
SMTP_SWITCHES = ("inline-css", "track-clicks", "track-opens", "track-bounces", "prevent-scam")
# a login's or key's default stream (postwire.core.lanes); auto: decided by the message
STREAM_CHOICES = ("transactional", "bulk", "auto")


class CliError(Exception):
    """Something the user can put right: main prints it as one line (no traceback) and exits 1."""


def _data_dir(settings: CliSettings, fix: str) -> Path:
    """The local run's data folder (postwire.cli.settings.local_data_dir), or a CliError saying ``fix``
    when there is none: run outside a checkout, the CLI must not make a new system in a random folder."""
    cwd = Path.cwd()
    data_dir = local_data_dir(settings, cwd)
    if data_dir is None:
        raise CliError(f"{cwd} is not inside a Postwire checkout, so there is no local run here: {fix}")
    return data_dir


@contextmanager
def _database(settings: CliSettings, *, tables: bool = True) -> Iterator[str]:
    """The URL of POSTWIRE_DATABASE_URL when set, else of the local run's PostgreSQL (attached to, or
    started for this command and stopped after it: postwire.cli.embedded.attach_postgres). Never makes
    a database; a missing local run, a database that cannot be reached or (``tables``) has no Postwire
    tables become a CliError before the command starts."""
    if "POSTWIRE_DATABASE_URL" in os.environ:
        url = settings.database_url
        _check_database(url, "the database in POSTWIRE_DATABASE_URL", tables)
        yield url
        return
    from postwire.cli.embedded import attach_postgres, has_postgres

    data_dir = _data_dir(settings, "run this inside the checkout where `make run` runs, or set "
                                   "POSTWIRE_DATABASE_URL to the PostgreSQL to use")
    if not has_postgres(data_dir):
        root = checkout_root(data_dir.parent)
        raise CliError(f"no local run in {data_dir} yet: start one with `make run`"
                       f"{f' in {root}' if root else ''}, or set POSTWIRE_DATABASE_URL to the PostgreSQL "
                       "to use")
    with attach_postgres(data_dir) as url:
        _check_database(url, f"the local run's database in {data_dir}", tables)
        yield url


def _check_database(url: str, what: str, tables: bool) -> None:
    """Connect once before the command, so that the usual obstacles read as one line, not a traceback."""
    from sqlalchemy import text

    from postwire.db.engine import make_engine

    async def check() -> bool:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                found = await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
                return bool(found)
        finally:
            await engine.dispose()

    try:
        migrated = asyncio.run(check())
    except Exception as e:
        orig = getattr(e, "orig", None) or e
        lines = str(orig).strip().splitlines()
        raise CliError(f"cannot connect to {what}: {lines[0] if lines else type(orig).__name__}") from e
    if tables and not migrated:
        raise CliError(f"{what} has no Postwire tables: apply them with `postwire db upgrade`")


def cmd_run(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.local_run import run_stack

    data_dir = _data_dir(settings, "run `make run` in the checkout, or set POSTWIRE_DATA_DIR to the folder "
                                   "to keep a local run's data in")
    return run_stack(settings.model_copy(update={"data_dir": data_dir}))


def cmd_account_create(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.account_commands import AccountExists, create_account

    try:
        with _database(settings) as url:
            creds = asyncio.run(create_account(url, args.name, args.allow_unverified_from))
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


def cmd_account_set(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.account_commands import (
        AccountNotFound,
        parse_rate,
        set_pause_threshold,
        set_unverified_from,
    )

    if args.pause_bulk_at is None and args.allow_unverified_from is None:
        print("postwire: nothing to change: give --pause-bulk-at or --allow-unverified-from", file=sys.stderr)
        return 2
    try:
        rate = parse_rate(args.pause_bulk_at) if args.pause_bulk_at is not None else None
        with _database(settings) as url:
            if args.pause_bulk_at is not None:
                asyncio.run(set_pause_threshold(url, args.name, rate))
            if args.allow_unverified_from is not None:
                asyncio.run(set_unverified_from(url, args.name, args.allow_unverified_from == "yes"))
    except AccountNotFound:
        print(f"postwire: no account {args.name!r}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"postwire: {e}", file=sys.stderr)
        return 2
    if args.pause_bulk_at is not None:
        print(f"account {args.name}: bulk mail pauses at a 24-hour complaint rate of "
              + (f"{rate:.2%}" if rate is not None else "never (off)"))
    if args.allow_unverified_from is not None:
        print(f"account {args.name}: " + ("may send From any domain" if args.allow_unverified_from == "yes"
                                          else "may send From its verified domains only"))
    return 0


def cmd_account_resume_bulk(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.account_commands import AccountNotFound, resume_bulk

    try:
        with _database(settings) as url:
            was = asyncio.run(resume_bulk(url, settings.nats_url, args.name))
    except AccountNotFound:
        print(f"postwire: no account {args.name!r}", file=sys.stderr)
        return 1
    print(f"account {args.name}: bulk mail resumed (paused since {was.isoformat()})" if was is not None
          else f"account {args.name}: bulk mail was not paused")
    return 0


def cmd_user_create(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.account_commands import AccountNotFound, create_console_user
    from postwire.db.console_users import EmailTaken

    try:
        with _database(settings) as url:
            user, password = asyncio.run(create_console_user(url, args.account, args.email, args.role))
    except AccountNotFound:
        print(f"postwire: no account {args.account!r}", file=sys.stderr)
        return 1
    except EmailTaken:
        print(f"postwire: a console user {args.email!r} exists already", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"postwire: {e}", file=sys.stderr)
        return 1
    found = {"id": user.id, "account_id": user.account_id, "email": user.email, "role": user.role,
             "password": password}
    if args.json:
        print(json.dumps(found))
    else:
        print(f"console user {user.email} ({user.role}) of account {user.account_id}\n"
              f"password     {password}\n"
              "The password is shown once; only its hash is stored. Log in at /console/login.")
    return 0


def cmd_smtp_login_set(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.account_commands import LoginNotFound, login_as_json, login_as_text, set_login

    given = {flag: getattr(args, flag.replace("-", "_")) for flag in SMTP_SWITCHES}
    changes = {flag.replace("-", "_"): value == "on" for flag, value in given.items() if value is not None}
    if not changes and args.stream is None:
        print("postwire: nothing to set: give at least one of "
              + ", ".join(f"--{flag}" for flag in (*SMTP_SWITCHES, "stream")), file=sys.stderr)
        return 2
    try:
        with _database(settings) as url:
            login = asyncio.run(set_login(url, args.username, changes, args.stream))
    except LoginNotFound:
        print(f"postwire: no SMTP login named {args.username!r}", file=sys.stderr)
        return 1
    print(json.dumps(login_as_json(login)) if args.json else login_as_text(login))
    return 0


def cmd_api_key_set(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.account_commands import KeyNotFound, set_key_stream

    key_id = args.key.removeprefix("pw_").partition("_")[0]  # the id, or a whole key: its id part
    try:
        with _database(settings) as url:
            asyncio.run(set_key_stream(url, args.account, key_id, args.stream))
    except KeyNotFound:
        print(f"postwire: account {args.account!r} has no API key {key_id!r}", file=sys.stderr)
        return 1
    print(f"api key {key_id}: stream {args.stream}")
    return 0


def cmd_smtp_login_show(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.account_commands import LoginNotFound, login_as_json, login_as_text, show_login

    try:
        with _database(settings) as url:
            login = asyncio.run(show_login(url, args.username))
    except LoginNotFound:
        print(f"postwire: no SMTP login named {args.username!r}", file=sys.stderr)
        return 1
    print(json.dumps(login_as_json(login)) if args.json else login_as_text(login))
    return 0


def cmd_domain_add(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.domain_commands import ALGORITHM_NAMES, AccountNotFound, add, as_json, as_text
    from postwire.db.domains import DomainExists, InvalidDomain

    try:
        with _database(settings) as url:
            info, records = asyncio.run(add(url, args.account, args.name, ALGORITHM_NAMES[args.algorithm],
                                            settings))
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


def cmd_domain_trust(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.domain_commands import AccountNotFound, trust

    try:
        with _database(settings) as url:
            found = asyncio.run(trust(url, args.account, args.name))
    except AccountNotFound:
        print(f"postwire: no account with the name or id {args.account!r}", file=sys.stderr)
        return 1
    if not found:
        print(f"postwire: the account has no domain {args.name!r}", file=sys.stderr)
        return 1
    print(f"domain {args.name}: verified; mail From it is accepted")
    return 0


def cmd_domain_list(args: argparse.Namespace, settings: CliSettings) -> int:
    from postwire.cli.domain_commands import AccountNotFound, as_json, as_text, list_all

    try:
        with _database(settings) as url:
            domains = asyncio.run(list_all(url, args.account, settings))
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

    with _database(settings, tables=False) as url:
        upgrade(url)
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
    create.add_argument("--allow-unverified-from", action="store_true",
                        help="let it send From domains it has not verified (docs/domains.md)")
    create.set_defaults(func=cmd_account_create)
    account_set = account.add_parser(
        "set", help="change an account's settings",
        description="--pause-bulk-at: the 24-hour complaint rate at which the account's bulk mail is paused "
                    "automatically (docs/delivery.md); 0.3%% by default, off = never. "
                    "--allow-unverified-from: whether it may send From domains it has not verified "
                    "(docs/domains.md); no by default.")
    account_set.add_argument("name", help="the account's name or id")
    account_set.add_argument("--pause-bulk-at", metavar="RATE|off",
                             help="e.g. 0.3%% or 0.003; off: never pause")
    account_set.add_argument("--allow-unverified-from", choices=["yes", "no"])
    account_set.set_defaults(func=cmd_account_set)
    resume = account.add_parser(
        "resume-bulk", help="resume an account's bulk mail after an automatic pause",
        description="Clears the pause and publishes a bulk_resumed event (POSTWIRE_NATS_URL); the held "
                    "bulk mail is routed again.")
    resume.add_argument("name", help="the account's name or id")
    resume.set_defaults(func=cmd_account_resume_bulk)
    user = sub.add_parser("user", help="console users (docs/console.md)").add_subparsers(dest="action",
                                                                                          required=True)
    user_create = user.add_parser("create", help="create a console user of an account; prints its password")
    user_create.add_argument("--account", required=True, help="the account's name or id")
    user_create.add_argument("email")
    user_create.add_argument("--role", choices=("admin", "viewer"), default="admin")
    user_create.add_argument("--json", action="store_true", help="print the user as one JSON object")
    user_create.set_defaults(func=cmd_user_create)
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
    login_set.add_argument("--stream", choices=[*STREAM_CHOICES],
                           help="the lane of messages that name none (docs/delivery.md); auto: by the "
                                "message")
    login_set.add_argument("--json", action="store_true", help="print the login as one JSON object")
    login_set.set_defaults(func=cmd_smtp_login_set)
    login_show = smtp_login.add_parser("show", help="print a login's account and default switches")
    login_show.add_argument("username", help="the SMTP login")
    login_show.add_argument("--json", action="store_true", help="print the login as one JSON object")
    login_show.set_defaults(func=cmd_smtp_login_show)
    api_key = sub.add_parser("api-key", help="an API key's defaults").add_subparsers(dest="action",
                                                                                   required=True)
    key_set = api_key.add_parser(
        "set", help="set an API key's default stream",
        description="The lane (docs/delivery.md) of the messages sent with the key that name none; auto: "
                    "decided by the message. Gateways remember a key for POSTWIRE_API_KEY_CACHE_TTL_S.")
    key_set.add_argument("key", help="the key's id (or the whole key)")
    key_set.add_argument("--account", required=True, help="the account id the key belongs to")
    key_set.add_argument("--stream", required=True, choices=[*STREAM_CHOICES])
    key_set.set_defaults(func=cmd_api_key_set)
    domain = sub.add_parser("domain", help="sending domains and their DKIM keys").add_subparsers(
        dest="action", required=True)
    add = domain.add_parser("add", help="register a domain with a new DKIM key; prints the DNS records")
    add.add_argument("name", help="the domain, e.g. example.com (IDN allowed)")
    add.add_argument("--account", required=True, help="account name or id")
    add.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa",
                     help="DKIM key: RSA-2048 (default; every receiver verifies it) or Ed25519 (RFC 8463)")
    add.add_argument("--json", action="store_true", help="print the domain as one JSON object")
    add.set_defaults(func=cmd_domain_add)
    trust = domain.add_parser(
        "trust", help="mark a domain verified without a DNS lookup (the operator vouches for it)",
        description="Mail From the domain is accepted from then on. The API's POST /v1/domains/NAME/verify "
                    "checks the DKIM record instead; use this for domains whose DNS this host cannot see.")
    trust.add_argument("name", help="the domain")
    trust.add_argument("--account", required=True, help="account name or id")
    trust.set_defaults(func=cmd_domain_trust)
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
    try:
        code = args.func(args, CliSettings())
    except CliError as e:
        print(f"postwire: {e}", file=sys.stderr)
        code = 1
    sys.exit(code)
