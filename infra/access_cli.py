"""`cdp keys create|list|rotate|revoke`, `cdp workspaces create|list|rename` and `cdp audit`: the access API
(queries/access.py) from the command line, on the running platform.

Key commands act on the workspace of the admin key they send: `--admin-key`, else CDP_ADMIN_KEY, else the
default workspace's admin key in the data dir's keys.json. Workspace commands send the platform key the same way.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Optional

import httpx
import typer
from rich.console import Console
from rich.table import Table

from infra.api_client import api_base, api_verify
from infra.config import ConfigError, Settings, load_settings

console = Console()
workspaces_app = typer.Typer(help="Workspaces (with the platform key): create, list, rename.", no_args_is_help=True)


def command_settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        console.print(f"[red]configuration:[/red] {exc}")
        raise typer.Exit(2) from None


def command_key(settings: Settings, kind: str, given: str | None) -> str:
    """The key to send: given, else CDP_<KIND>_KEY, else the data dir's keys.json."""
    if given:
        return given
    stored = json.loads(settings.keys_path.read_text()) if settings.keys_path.exists() else {}
    key = getattr(settings, f"{kind}_key") or stored.get(f"{kind}_key")
    if not key:
        console.print(f"[red]no {kind} key:[/red] pass --{kind}-key, set CDP_{kind.upper()}_KEY, or run `cdp up` once "
                      f"to create {settings.keys_path}")  # fmt: skip
        raise typer.Exit(2)
    return str(key)


def call_api(method: str, path: str, key: str, body: Any = None, params: dict[str, Any] | None = None,
          timeout: float = 60) -> Any:  # fmt: skip
    """One request to the running platform: its JSON answer, or its error said plainly and exit 1."""
    settings = command_settings()
    url = f"{api_base(settings)}{path}"
    try:
        response = httpx.request(method, url, headers={"Authorization": f"Bearer {key}"}, json=body, params=params,
                                 timeout=timeout, verify=api_verify(settings))  # fmt: skip
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {url}:[/red] {exc}. Is `cdp up` running?")
        raise typer.Exit(1) from None
    if response.status_code >= 300:
        try:
            error = response.json()
            said = f"{error.get('code')}: {error.get('message')}"
        except ValueError:
            said = response.text[:500]
        console.print(f"[red]{method} {path} answered {response.status_code}[/red] {said}", highlight=False)
        raise typer.Exit(1)
    return response.json() if response.content else None


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if epoch else "never"


def _show_made(made: dict[str, Any]) -> None:
    console.print(f"{made['kind']} key {made['id']}: {made['key']}", markup=False, highlight=False)
    console.print("[yellow]shown this once[/yellow]: keep it now; `cdp keys list` shows its id, never the key")


def keys_create(
    kind: str = typer.Argument(..., help="write, read or admin"),
    scope: list[str] = typer.Option([], "--scope", help="a read key's scope (repeat): profiles, events, kpis, "
                                    "segments, sql; default all"),  # fmt: skip
    name: str = typer.Option("", help="what the key is for, shown in listings and the audit log"),
    expires: Optional[str] = typer.Option(None, help="ISO 8601 time after which the key stops working"),
    admin_key: Optional[str] = typer.Option(None, help="an admin key of the workspace (default: the default's)"),
) -> None:
    """Make a key of the admin key's workspace; the key is printed this once."""
    key = command_key(command_settings(), "admin", admin_key)
    body = {"kind": kind, "scopes": scope, "name": name, "expires_at": expires}
    _show_made(call_api("POST", "/v1/keys", key, body))


def keys_list(admin_key: Optional[str] = typer.Option(None, help="an admin key of the workspace")) -> None:
    """The workspace's live keys: id, kind, scopes, name, origin, created, expires (never the keys)."""
    answer = call_api("GET", "/v1/keys", command_key(command_settings(), "admin", admin_key))
    table = Table()
    for column in ("id", "kind", "scopes", "name", "origin", "created", "expires"):
        table.add_column(column)
    for k in answer["keys"]:
        table.add_row(k["id"], k["kind"], ",".join(k["scopes"]), k["name"], k["origin"], _when(k["created_at"]),
                      _when(k["expires_at"]))  # fmt: skip
    console.print(table)


def keys_rotate(
    key_id: str = typer.Argument(..., help="the id `cdp keys list` shows"),
    admin_key: Optional[str] = typer.Option(None, help="an admin key of the workspace"),
) -> None:
    """A new key of the same kind, scopes, name and expiry; the old one stops working at once."""
    _show_made(call_api("POST", f"/v1/keys/{key_id}/rotate", command_key(command_settings(), "admin", admin_key)))


def keys_revoke(
    key_id: str = typer.Argument(..., help="the id `cdp keys list` shows"),
    admin_key: Optional[str] = typer.Option(None, help="an admin key of the workspace"),
) -> None:
    """Revoke a key: refused at once by the API, within a second by the ingest workers."""
    call_api("DELETE", f"/v1/keys/{key_id}", command_key(command_settings(), "admin", admin_key))
    console.print(f"revoked {key_id}", highlight=False)


def register_key_commands(keys_app: typer.Typer) -> None:
    keys_app.command("create")(keys_create)
    keys_app.command("list")(keys_list)
    keys_app.command("rotate")(keys_rotate)
    keys_app.command("revoke")(keys_revoke)


@workspaces_app.command("create")
def workspaces_create(
    name: str = typer.Argument(..., help="the new workspace's name"),
    platform_key: Optional[str] = typer.Option(None, help="the platform key (default: CDP_PLATFORM_KEY, keys.json)"),
) -> None:
    """Make a workspace; its first admin, write and read keys are printed this once."""
    made = call_api("POST", "/v1/workspaces", command_key(command_settings(), "platform", platform_key), {"name": name})
    console.print(f"workspace {made['name']}: {made['id']}", markup=False, highlight=False)
    for key in made["keys"]:
        _show_made(key)


@workspaces_app.command("list")
def workspaces_list(platform_key: Optional[str] = typer.Option(None, help="the platform key")) -> None:
    """Every workspace, by name, with its id."""
    table = Table()
    table.add_column("id")
    table.add_column("name")
    for w in call_api("GET", "/v1/workspaces", command_key(command_settings(), "platform", platform_key))["workspaces"]:
        table.add_row(w["id"], w["name"])
    console.print(table)


@workspaces_app.command("rename")
def workspaces_rename(
    workspace_id: str = typer.Argument(..., help="the id `cdp workspaces list` shows"),
    name: str = typer.Argument(..., help="the new name"),
    platform_key: Optional[str] = typer.Option(None, help="the platform key"),
) -> None:
    """Rename a workspace; its id and keys stay."""
    done = call_api("PATCH", f"/v1/workspaces/{workspace_id}", command_key(command_settings(), "platform", platform_key), {"name": name})
    console.print(f"workspace {done['id']} is now {done['name']}", markup=False, highlight=False)


def audit(
    since: Optional[str] = typer.Option(None, "--from", help="ISO 8601: entries from then"),
    until: Optional[str] = typer.Option(None, "--to", help="ISO 8601: entries before then"),
    key_id: Optional[str] = typer.Option(None, help="only this key's requests"),
    target: Optional[str] = typer.Option(None, help="only those about this profile id, slug or key id"),
    action: Optional[str] = typer.Option(None, help="read (personal data), admin or platform"),
    limit: int = typer.Option(100, min=1, max=1000, help="entries to show"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line instead of a table"),
    admin_key: Optional[str] = typer.Option(None, help="an admin key of the workspace"),
) -> None:
    """Who read which profile and who changed what: the workspace's audit log, oldest first."""
    params = {"from": since, "to": until, "key_id": key_id, "target": target, "action": action, "limit": limit}
    answer = call_api("GET", "/v1/audit", command_key(command_settings(), "admin", admin_key),
                   params={k: v for k, v in params.items() if v is not None})  # fmt: skip
    if as_json:
        for entry in answer["entries"]:
            console.print(json.dumps(entry), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table()
    for column in ("at", "key", "action", "method", "endpoint", "target", "address", "status"):
        table.add_column(column)
    for e in answer["entries"]:
        table.add_row(e["at"], e["key_id"], e["action"], e["method"], e["endpoint"], e["target"] or "",
                      e["address"] or "", str(e["status"]))  # fmt: skip
    console.print(table)
