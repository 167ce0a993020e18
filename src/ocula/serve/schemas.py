"""JSON shapes of the server: ocula's `/predict`, and the Open Inference Protocol v2 (KServe/Triton).

The v2 models follow https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
including Triton's binary-tensor extension (`binary_data_size`, `binary_data_output`), which the
standard `tritonclient.http` client uses by default.
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field


class Error(BaseModel):
    error: str  # one line, says what was wrong with the request


class Label(BaseModel):
    label: str
    prob: float


class Box(BaseModel):
    label: str
    score: float
    box: list[float]  # x1, y1, x2, y2 in pixels of the uploaded image


class ImagePrediction(BaseModel):
    source: str  # the uploaded file's name, or "<body>" for a raw body
    label: Optional[str] = None  # the top class (a detector: the best box's; absent when it found none)
    prob: Optional[float] = None
    topk: list[Label]  # best first (a detector: its best boxes' labels and scores)
    abstained: bool = False  # the top probability is below the server's (or the request's) min_confidence
    labels: Optional[list[Label]] = None  # multilabel models: the labels at or above their thresholds
    boxes: Optional[list[Box]] = None  # detectors: the boxes scoring at least the box threshold, best first


class PredictResponse(BaseModel):
    model: str
    predictions: list[ImagePrediction]  # one per image, in the order they were sent


# ---------------------------------------------------------------------------- Open Inference Protocol v2
class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]  # -1: any size


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = Field(default_factory=dict)  # classes, contract (ocula's addition)


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class InferInput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Optional[list] = None  # absent when the tensor travels in binary after the JSON header


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: Optional[str] = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InferInput]
    outputs: Optional[list[RequestedOutput]] = None
