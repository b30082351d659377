"""FlexNet: layers hold activity, connections hold weights, recurrence runs from any layer to
any layer with any delay."""

from .connections import Conv, Connection, Dense, Identity, Pool
from .history import History
from .layers import ActivationLayer, FeatureMapLayer, InputLayer, Layer, MemoryLayer
from .network import Network

__all__ = [
    "ActivationLayer",
    "Connection",
    "Conv",
    "Dense",
    "FeatureMapLayer",
    "History",
    "Identity",
    "InputLayer",
    "Layer",
    "MemoryLayer",
    "Network",
    "Pool",
]
