"""`modelpress admin list-keys` and `revoke-key`: the operator's view of API keys."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

EXIT_NOT_FOUND = 1


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else "-"


def cmd_list_keys(args: argparse.Namespace) -> int:
    """One line per key: prefix, tenant, created, last used, revoked (never the secret)."""
    from app.core.config import get_settings
    from app.db.migrate import upgrade_head
    from app.db.session import session_scope
    from app.tenants.service import list_keys

    upgrade_head(get_settings().resolved_database_url)
    with session_scope() as session:
        keys = list_keys(session, args.tenant)
    rows = [("PREFIX", "TENANT", "CREATED", "LAST_USED", "REVOKED")]
    rows += [
        (k.prefix, k.tenant, _when(k.created_at), _when(k.last_used_at), _when(k.revoked_at))
        for k in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0


def cmd_revoke_key(args: argparse.Namespace) -> int:
    """Revoke a key by prefix (`mp_<key id>`) or id; effective at the next request."""
    from app.core.config import get_settings
    from app.core.errors import NotFound
    from app.db.migrate import upgrade_head
    from app.db.session import session_scope
    from app.tenants.service import revoke_key

    upgrade_head(get_settings().resolved_database_url)
    try:
        with session_scope() as session:
            info, revoked = revoke_key(session, args.key)
    except NotFound as exc:
        print(f"modelpress: {exc.detail}", file=sys.stderr)
        return EXIT_NOT_FOUND
    state = "revoked" if revoked else "was already revoked"
    print(f"key {info.prefix} of tenant {info.tenant!r} {state} at {_when(info.revoked_at)}")
    return 0


def add_key_commands(admin: Any) -> None:
    """Add `list-keys` and `revoke-key` to the `admin` subparsers."""
    p = admin.add_parser("list-keys", help="list API keys (prefix, tenant, dates; no secrets)")
    p.add_argument("--tenant", default=None, help="only this tenant's keys")
    p.set_defaults(func=cmd_list_keys)
    p = admin.add_parser("revoke-key", help="revoke an API key at once")
    p.add_argument("key", metavar="KEY_ID", help="the key's prefix `mp_<key id>`, or its id")
    p.set_defaults(func=cmd_revoke_key)
