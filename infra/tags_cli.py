"""`cdp tags apply FILE.yaml`: define or change tags on the running platform and follow their backfills."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from infra.api_client import api_base, api_verify
from infra.config import ConfigError, Settings, load_settings

tags_app = typer.Typer(help="Dynamic tags: define them from files and follow their backfill.", no_args_is_help=True)
console = Console()


def _keys(settings: Settings) -> tuple[str, str]:
    """The admin key (changing tags needs it) and the key that reads them: the read key, else the admin key
    (it opens every read scope)."""
    stored = json.loads(settings.keys_path.read_text()) if settings.keys_path.exists() else {}
    admin_key = settings.admin_key or stored.get("admin_key")
    if not admin_key:
        console.print(f"[red]no admin key:[/red] changing tags needs the workspace's admin key; set CDP_ADMIN_KEY or "
                      f"run `cdp up` once to create {settings.keys_path}")  # fmt: skip
        raise typer.Exit(2)
    read_key = settings.read_key or stored.get("read_key") or admin_key
    return str(admin_key), str(read_key)


def definitions_in(text: str) -> list[dict[str, Any]]:
    """A file holds one tag, a list of tags, `tags: [...]`, or several YAML documents."""
    found: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("tags"), list):
            doc = doc["tags"]
        found += doc if isinstance(doc, list) else [doc]
    bad = [i for i, d in enumerate(found) if not isinstance(d, dict) or not isinstance(d.get("id"), str)]
    if bad:
        raise ValueError(f"tag #{bad[0] + 1} has no id; every tag needs `id:` (and `rule:`)")
    return found


@tags_app.command("apply")
def apply(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="YAML or JSON: one tag, a list, or tags: [...]"),
    wait: bool = typer.Option(True, help="Follow each backfill with a progress bar until it is done."),
    timeout: float = typer.Option(600.0, help="Seconds to wait for the backfills."),
) -> None:
    """Create or change the tags in FILE (each change is a new rule version; a tag the file leaves as it is
    stays at its version) and show the backfill progress."""
    try:
        settings = load_settings()
        tags = definitions_in(file.read_text())
    except (ConfigError, ValueError, yaml.YAMLError) as exc:
        console.print(f"[red]{file}:[/red] {exc}")
        raise typer.Exit(2) from None
    admin_key, read_key = _keys(settings)
    base = api_base(settings)
    applied: list[tuple[str, int]] = []
    with httpx.Client(base_url=base, timeout=30, verify=api_verify(settings)) as http:
        try:
            before = _versions(http, read_key)
        except httpx.HTTPError as exc:
            console.print(f"[red]cannot reach {base}:[/red] {exc}. Is `cdp up` running?")
            raise typer.Exit(1) from None
        for tag in tags:
            try:
                response = http.put(f"/v1/tags/{tag['id']}", json=tag, headers={"Authorization": f"Bearer {admin_key}"})
            except httpx.HTTPError as exc:
                console.print(f"[red]cannot reach {base}:[/red] {exc}. Is `cdp up` running?")
                raise typer.Exit(1) from None
            if response.status_code != 200:
                body = response.json()
                console.print(f"[red]tag {tag['id']!r} refused ({response.status_code}):[/red] {body.get('error', body)}")
                for error in body.get("errors", []):
                    console.print(f"  {error['path']}: {error['reason']}")
                raise typer.Exit(1)
            version = response.json()["rule_version"]
            if version == before.get(tag["id"]):  # the platform recorded nothing: the file says what it says
                console.print(f"tag [bold]{tag['id']}[/bold] is unchanged at rule version {version}")
                continue
            console.print(f"tag [bold]{tag['id']}[/bold] is at rule version {version}")
            before[tag["id"]] = version
            applied.append((tag["id"], version))
        if wait:
            _follow(http, read_key, applied, timeout)


def _versions(http: httpx.Client, read_key: str) -> dict[str, int]:
    """The rule version of every tag the platform has now, to tell a new version from an unchanged one."""
    response = http.get("/v1/tags", headers={"Authorization": f"Bearer {read_key}"})
    if response.status_code != 200:
        console.print(f"[red]cannot list the tags ({response.status_code}):[/red] {response.text}")
        raise typer.Exit(1)
    return {t["id"]: t["rule_version"] for t in response.json()["tags"]}


def _follow(http: httpx.Client, read_key: str, applied: list[tuple[str, int]], timeout: float) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    deadline = time.monotonic() + timeout
    with Progress(*columns, console=console) as progress:
        tasks = {slug: progress.add_task(f"backfill {slug} v{version}", total=None) for slug, version in applied}
        pending = dict(applied)
        while pending:
            for slug, version in list(pending.items()):
                body = http.get(f"/v1/tags/{slug}", headers={"Authorization": f"Bearer {read_key}"}).json()
                backfill = body.get("backfill") or {}
                if backfill.get("rule_version", 0) > version or backfill.get("state") == "superseded":
                    progress.update(tasks[slug], description=f"backfill {slug} v{version}: superseded by a newer version")
                    del pending[slug]
                elif backfill.get("rule_version") == version:
                    progress.update(tasks[slug], total=backfill["total"] or 1, completed=backfill["done"])
                    if backfill["state"] == "done":
                        progress.update(tasks[slug], description=f"{slug} v{version}: {body['members']} members")
                        del pending[slug]
            if pending and time.monotonic() > deadline:
                console.print(f"[yellow]still running after {timeout:.0f}s:[/yellow] {', '.join(pending)}")
                raise typer.Exit(1)
            if pending:
                time.sleep(0.2)
