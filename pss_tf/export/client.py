"""Requests to a TF Serving model of an export, as a client builds them.

    body = rest_body("adaptive", images, budget=5.0)
    requests.post(f"http://HOST:8501/v1/models/{name}:predict", json=body)

    request = predict_request(name, "flops_8m", images)
    PredictionServiceStub(grpc.insecure_channel("HOST:8500")).Predict(request)

Images are uint8 (N, H, W, C) arrays of the model's channel count, any size.
"""

from __future__ import annotations

import numpy as np

from pss_tf.export.savedmodel import BUDGET, IMAGES


def _images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images: expected a uint8 (N, H, W, C) array, got {images.dtype} {images.shape}")
    return images


def rest_body(signature_name: str, images, budget: float | None = None) -> dict:
    """A REST predict body in the row ("instances") format.

    Each instance is one image; with a budget, each carries it too (the row
    format needs every input per instance; the model runs one subnet per
    request, for the smallest budget given).
    """
    images = _images(images)
    if budget is None:
        instances = [{IMAGES: image.tolist()} for image in images]
    else:
        instances = [{IMAGES: image.tolist(), BUDGET: float(budget)} for image in images]
    return {"signature_name": signature_name, "instances": instances}


def predict_request(model_name: str, signature_name: str, images, budget: float | None = None, version: int | None = None):
    """A gRPC `PredictRequest` (tensorflow-serving-api), images as a uint8 tensor."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[IMAGES].CopyFrom(tf.make_tensor_proto(_images(images), dtype=tf.uint8))
    if budget is not None:
        request.inputs[BUDGET].CopyFrom(tf.make_tensor_proto([float(budget)], dtype=tf.float32))
    return request
