"""The tutorial's design: FastAPI, the iris demo model from an in-memory dict, no auth, no
storage (run on one uvicorn worker with h11 and asyncio by `python -m bench predict`)."""

import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from predictions.demo.training import train_demo_models
from predictions.runtime.outputs import describe
from predictions.runtime.predictors import load_predictor

models: dict[str, tuple] = {}


class PredictionRequest(BaseModel):
    input_data: list[float]
    model_version: str = "v1"


class PredictionResponse(BaseModel):
    prediction: list[float]
    label: str
    confidence: float
    model_version: str
    processing_time: float
    timestamp: str


@asynccontextmanager
async def lifespan(_: FastAPI):
    """Load every version of the iris model once, before the first request."""
    demo = next(m for m in train_demo_models() if m.name == "iris")
    for version in demo.versions:
        models[version.label] = (load_predictor("numpy", version.artifact), list(demo.labels))
    yield


app = FastAPI(title="Reference AI API", lifespan=lifespan)


@app.get("/health")
async def health() -> dict:
    return {"status": "healthy", "models_loaded": sorted(models)}


@app.post("/predict", response_model=PredictionResponse)
async def predict(request: PredictionRequest) -> PredictionResponse:
    start = time.perf_counter()
    if request.model_version not in models:
        raise HTTPException(status_code=404, detail=f"Model {request.model_version} not found")
    predictor, labels = models[request.model_version]
    x = np.asarray(request.input_data, dtype=np.float32).reshape(1, -1)
    outcome = describe(predictor.predict(x), task="classification", labels=labels)[0]
    return PredictionResponse(
        prediction=outcome.prediction,
        label=outcome.label,
        confidence=outcome.confidence,
        model_version=request.model_version,
        processing_time=time.perf_counter() - start,
        timestamp=datetime.now(UTC).isoformat(),
    )
