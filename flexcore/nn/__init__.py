"""FlexNet: layers hold activity, connections hold weights, recurrence runs from any layer to
any layer with any delay."""

from .callbacks import Callback, EarlyStopping, LearningRateScheduler, ModelCheckpoint
from .connections import Conv, Connection, Dense, Identity, Pool, ScalarGate
from .ginfty import GInfty, ginfty
from .history import History
from .layers import ActivationLayer, FeatureMapLayer, InputLayer, Layer, MemoryLayer
from .network import Network

__all__ = [
    "ActivationLayer",
    "Callback",
    "Connection",
    "Conv",
    "Dense",
    "EarlyStopping",
    "FeatureMapLayer",
    "GInfty",
    "History",
    "Identity",
    "InputLayer",
    "Layer",
    "LearningRateScheduler",
    "MemoryLayer",
    "ModelCheckpoint",
    "Network",
    "Pool",
    "ScalarGate",
    "ginfty",
]
