"""HTTP adapter of predictions (services/predictions.py): the models with their evaluation, a run on demand,
and the sales forecast. The scores themselves are computed traits of each profile (GET /v1/profiles/...)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.auth import Requires, services
from api.responses import json_response
from services import Services
from services.predictions import FORECAST_KPIS, GetForecast, PredictionService, RunPredictions

router = APIRouter(tags=["predictions"])
models_read = Requires("read:kpis", "reading the prediction models and forecasts")
run_key = Requires("admin", "running the predictions")


def predictions(built: Services = Depends(services)) -> PredictionService:
    return built.predictions


@router.get(
    "/v1/predictions/models", summary="Each prediction model: its last run, parameters and evaluation",
    description="`purchase_propensity`, `churn_risk` (AUC, Brier score and lift in the top decile on the period "
    "after a time split) and `predicted_ltv` (BG/NBD and Gamma-Gamma parameters; predicted against actual "
    "purchases per customer in a holdout). A model without enough history says what it needs.",
)  # fmt: skip
def list_models(workspace_id: str = Depends(models_read), service: PredictionService = Depends(predictions)) -> Response:
    return json_response(service.models(workspace_id))


@router.post(
    "/v1/predictions/run", summary="Train, evaluate and score every model now (as the schedule does)",
    description="Answers when the run is done (seconds to minutes, by the size of the history), with what each "
    "model did. 409 `run_in_progress` while another run of the workspace goes on.",
)  # fmt: skip
async def run(workspace_id: str = Depends(run_key), service: PredictionService = Depends(predictions)) -> Response:
    return json_response(await run_in_threadpool(service.run, RunPredictions(workspace_id)))


@router.get(
    "/v1/forecasts/{kpi}", summary="A forecast of revenue or won revenue for the next weeks or months, per currency",
    description=f"`kpi`: {', '.join(FORECAST_KPIS)}. Exponential smoothing over the KPI's series (the last whole "
    "periods), with intervals at `level` and the MAPE of the same model on the last periods held out; "
    "`won_revenue` also says what the open pipeline holds (`open_pipeline`).",
)  # fmt: skip
def get_forecast(
    kpi: str,
    workspace_id: str = Depends(models_read),
    granularity: Annotated[str, Query(pattern="^(week|month)$")] = "week",
    horizon: Annotated[int, Query(ge=1, le=52)] = 4,
    level: Annotated[float, Query(gt=0, lt=1)] = 0.8,
    history: Annotated[int, Query(ge=8, le=260, description="periods of history the model is fitted on")] = 52,
    service: PredictionService = Depends(predictions),
) -> Response:
    return json_response(service.forecast(GetForecast(workspace_id, kpi, granularity, horizon, level, history)))
