"""`cdp webhooks apply FILE|NAME`: install a webhook source's mapping on the running platform.

NAME is one of the mappings shipped in infra/webhook_mappings (stripe, typeform);
FILE is a YAML or JSON mapping of your own (docs/webhooks.md). The source is the
file's `source:` or, without one, its name without the extension.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import typer
import yaml
from rich.console import Console
from rich.table import Table

from infra.api_client import api_base, api_verify
from infra.config import ConfigError, Settings, load_settings

SHIPPED = Path(__file__).resolve().parent / "webhook_mappings"
webhooks_app = typer.Typer(help="Webhook sources: install the mappings that turn a tool's payloads into calls.",
                           no_args_is_help=True)  # fmt: skip
console = Console()


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _admin_key(settings: Settings) -> str:
    """Mappings are configuration: installing and listing them needs the workspace's admin key."""
    stored = json.loads(settings.keys_path.read_text()) if settings.keys_path.exists() else {}
    key = settings.admin_key or stored.get("admin_key")
    if not key:
        console.print(f"[red]no admin key:[/red] webhook mappings need the workspace's admin key; set CDP_ADMIN_KEY "
                      f"or run `cdp up` once to create {settings.keys_path}")  # fmt: skip
        raise typer.Exit(2)
    return str(key)


def shipped() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def _file(file_or_name: str) -> Path:
    path = Path(file_or_name)
    if path.is_file():
        return path
    if (SHIPPED / f"{file_or_name}.yaml").is_file():
        return SHIPPED / f"{file_or_name}.yaml"
    console.print(f"[red]{file_or_name}:[/red] no such file, and not a shipped mapping ({', '.join(shipped())})")
    raise typer.Exit(2)


def _source(path: Path, text: str, given: str | None) -> str:
    if given:
        return given
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        document = None  # the platform says precisely what is wrong with it
    named = document.get("source") if isinstance(document, dict) else None
    return named if isinstance(named, str) and named else path.stem


def _request(method: str, path: str, key: str, **kwargs: object) -> httpx.Response:
    s = _settings()
    base = api_base(s)
    try:
        return httpx.request(method, base + path, headers={"Authorization": f"Bearer {key}",
                             **kwargs.pop("headers", {})}, timeout=30, verify=api_verify(s), **kwargs)  # type: ignore[arg-type]  # fmt: skip
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {base}:[/red] {exc}. Is `cdp up` running?")
        raise typer.Exit(1) from None


@webhooks_app.command("apply")
def apply(
    file_or_name: str = typer.Argument(..., help="a mapping file (YAML or JSON), or a shipped one: stripe, typeform"),
    source: str = typer.Option(None, help="the source name (default: the file's `source:`, else the file name)"),
) -> None:
    """Install or change a source's mapping (each change is a new version) and print the URL to give the tool."""
    settings = _settings()
    path = _file(file_or_name)
    text = path.read_text()
    name = _source(path, text, source)
    key = _admin_key(settings)
    content_type = "application/json" if path.suffix == ".json" else "application/yaml"
    response = _request("PUT", f"/v1/webhooks/{name}/mapping", key, content=text.encode(),
                        headers={"Content-Type": content_type})  # fmt: skip
    body = response.json()
    if response.status_code not in (200, 201):
        console.print(f"[red]{path}: the {name} mapping was refused ({response.status_code} {body.get('code')}):[/red] "
                      f"{body.get('message')}")  # fmt: skip
        for error in body.get("errors", []):
            console.print(f"  {error['field']}: {error['reason']}")
        raise typer.Exit(1)
    state = "" if body["changed"] else " (unchanged)"
    console.print(f"[green]{name} mapping is at version {body['version']}{state}[/green]: "
                  f"{', '.join(body['event_types'])}")  # fmt: skip
    base = api_base(settings)
    console.print(f"  the tool posts to {base}/v1/webhooks/{name}?key=<write key> (keep that URL secret, like the "
                  "key), or sends the key as HTTP Basic username")  # fmt: skip


@webhooks_app.command("list")
def listing() -> None:
    """The installed webhook sources, with their mapping versions and event types."""
    response = _request("GET", "/v1/webhooks", _admin_key(_settings()))
    if response.status_code != 200:
        console.print(f"[red]{response.status_code}:[/red] {response.text}")
        raise typer.Exit(1)
    sources = response.json()["webhooks"]
    if not sources:
        console.print(f"no webhook sources; install one with `cdp webhooks apply` ({', '.join(shipped())} ship)")
        return
    table = Table(title=f"{len(sources)} webhook sources")
    for column in ("source", "version", "event types", "description"):
        table.add_column(column)
    for s in sources:
        table.add_row(s["source"], str(s["version"]), ", ".join(s["event_types"]), s["description"])
    console.print(table)
