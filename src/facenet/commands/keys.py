"""``facenet keys create --scope read|write|admin [--name N] | list | revoke ID`` (``--keys FILE``):
the API keys of ``facenet serve``."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from facenet.commands._apps import error
from facenet.serve.keys import SCOPES, KeyStore, KeyStoreError, keys_path
from facenet.utils import dumps_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="make a key; it is printed once and stored hashed")
    create.add_argument("--scope", choices=SCOPES, required=True, help="read < write < admin")
    create.add_argument("--name", default="", help="who or what the key is for")
    lst = sub.add_parser("list", help="every key (ids, names, scopes; never the keys)")
    lst.add_argument("--json", action="store_true")
    revoke = sub.add_parser("revoke", help="stop a key working (at its next request)")
    revoke.add_argument("id", metavar="ID", help="the key's id (facenet keys list)")
    for p in (create, lst, revoke):
        p.add_argument(
            "--keys",
            default=None,
            help="the key store (default: $FACENET_KEYS or ./facenet-keys.sqlite)",
        )


def _when(t: float | None) -> str:
    return "-" if t is None else dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def run(args: argparse.Namespace) -> int:
    path = keys_path(args.keys)
    if args.action != "create" and not path.exists():
        return error(f"no key store at {path}; make a key first: facenet keys create --scope read")
    try:
        store = KeyStore(path)
    except (KeyStoreError, OSError) as e:
        return error(e)
    with store:
        try:
            if args.action == "create":
                key, text = store.create(args.scope, args.name)
                print(text)
                print(
                    f"facenet: key {key.id} ({key.scope}) stored hashed in {path}; "
                    "the key above is shown only now",
                    file=sys.stderr,
                )
                return 0
            if args.action == "revoke":
                key = store.revoke(args.id)
                print(f"revoked key {key.id} ({key.scope}, {key.name or 'no name'})")
                return 0
            keys = store.list()
        except KeyStoreError as e:
            return error(e)
    if args.json:
        print(dumps_json([k.__dict__ | {"active": k.active} for k in keys]))
        return 0
    if not keys:
        print(f"no keys in {path}")
        return 0
    print(f"{'id':<14}{'scope':<7}{'created':<18}{'revoked':<18}name")
    for k in keys:
        print(f"{k.id:<14}{k.scope:<7}{_when(k.created_at):<18}{_when(k.revoked_at):<18}{k.name}")
    return 0
