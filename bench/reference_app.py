"""Minimal FastAPI reference: the iris demo model from an in-memory dict, no auth, no storage."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from predictions.runtime.outputs import describe
from predictions.runtime.predictors import load_predictor
from predictions.runtime.training import train_demo_models

MODEL_NAME = "iris"


@dataclass(frozen=True)
class LoadedModel:
    """A predictor ready to serve, with its class labels."""

    predictor: Any
    labels: list[str]


models: dict[str, LoadedModel] = {}


class PredictionRequest(BaseModel):
    """Body of POST /predict."""

    input_data: list[float]
    model_version: str = "v1"


class PredictionResponse(BaseModel):
    """Answer of POST /predict."""

    prediction: list[float]
    label: str
    confidence: float
    model_version: str
    processing_time: float
    timestamp: str


def load_models() -> None:
    """Train the demo models and keep every version of the iris model in `models`."""
    for demo in train_demo_models():
        if demo.name != MODEL_NAME:
            continue
        for version in demo.versions:
            predictor = load_predictor("numpy", version.artifact)
            models[version.label] = LoadedModel(predictor, list(demo.labels))


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Load the models once, before the first request."""
    load_models()
    yield
    models.clear()


app = FastAPI(title="Reference AI API", lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, Any]:
    """Report liveness and the loaded versions."""
    return {"status": "healthy", "models_loaded": sorted(models)}


@app.post("/predict", response_model=PredictionResponse)
async def predict(request: PredictionRequest) -> PredictionResponse:
    """Predict class probabilities for one row of features."""
    start = time.perf_counter()
    model = models.get(request.model_version)
    if model is None:
        raise HTTPException(status_code=404, detail=f"Model {request.model_version} not found")
    x = np.asarray(request.input_data, dtype=np.float32).reshape(1, -1)
    outcome = describe(model.predictor.predict(x), task="classification", labels=model.labels)[0]
    return PredictionResponse(
        prediction=outcome.prediction,
        label=outcome.label,
        confidence=outcome.confidence,
        model_version=request.model_version,
        processing_time=time.perf_counter() - start,
        timestamp=datetime.now(UTC).isoformat(),
    )
