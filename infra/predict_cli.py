"""`cdp predict`: train, evaluate and score the workspace's prediction models now, on the running platform
(POST /v1/predictions/run with an admin key), and show each model's evaluation; `--show` only shows them."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from infra.access_cli import call_api, command_key, command_settings

console = Console()


def _headline(model: dict[str, Any]) -> str:
    """The figures a reader compares first: AUC, Brier, lift; or the holdout's predicted against actual."""
    if model.get("status") != "trained":
        return str(model.get("reason") or model.get("needs") or "")
    if "metrics" in model:
        m = model["metrics"]
        return (f"AUC {m['auc']:.3f}, Brier {m['brier']:.3f}, top-decile lift {m['top_decile_lift']}, "
                f"base rate {m['base_rate']:.3f} ({m['evaluated_profiles']} profiles)")  # fmt: skip
    e = model["evaluation"]
    bg = model["parameters"]["bgnbd"]
    return (f"holdout {e['holdout_days']} d: {e['predicted_purchases']} purchases predicted, {e['actual_purchases']} "
            f"made, MAE {e['mean_absolute_error']}, correlation {e['correlation']}; BG/NBD r={bg['r']:.3f} "
            f"alpha={bg['alpha']:.3f} a={bg['a']:.3f} b={bg['b']:.3f}")  # fmt: skip


def predict(
    show: bool = typer.Option(False, "--show", help="only show the models' last runs, without running them"),
    as_json: bool = typer.Option(False, "--json", help="the API's JSON answer instead of a table"),
    admin_key: Optional[str] = typer.Option(None, help="an admin key of the workspace (else CDP_ADMIN_KEY or keys.json)"),
) -> None:
    """Train, evaluate and score purchase propensity, churn risk and lifetime value now (the schedule does it
    every CDP_PREDICTIONS_EVERY hours)."""
    settings = command_settings()
    if show:
        answer = call_api("GET", "/v1/predictions/models", command_key(settings, "admin", admin_key))
    else:
        with console.status("training, evaluating and scoring (minutes for a large history)…"):
            answer = call_api("POST", "/v1/predictions/run", command_key(settings, "admin", admin_key), timeout=3600)
    if as_json:
        console.print(json.dumps(answer), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table()
    for column in ("model", "status", "version", "profiles", "seconds", "evaluation"):
        table.add_column(column, overflow="fold")
    for m in answer["models"]:
        table.add_row(m["model"], m["status"], m.get("version", ""), str(m.get("scored_profiles", "")),
                      str(m.get("training_seconds", "")), _headline(m))  # fmt: skip
    console.print(table)
