"""Train-reply validation: the one check every strategy runs before a reply is scored or
aggregated. A rejection carries a reason (counted per round in `rounds.csv`) and a
detail for the log."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from core.protocol import CLASS_AFTER, CLASS_BEFORE, FIRING_AFTER, FIRING_BEFORE, NUM_EXAMPLES

RATES = (FIRING_BEFORE, FIRING_AFTER, CLASS_BEFORE, CLASS_AFTER)  # metrics that must lie in [0, 1]

# Why a selected client's update was not aggregated. The first two come from the
# transport (the ClientApp raised; no reply within round-timeout), the rest from the check.
REASONS = ("error", "timeout", "records", "keys", "shape", "dtype", "non-finite", "num-examples",
           "metric", "firing-rate")


class Rejection(NamedTuple):
    reason: str  # one of REASONS
    detail: str


def error_line(reason: str) -> str:
    """An error reply's reason in one line: the raised exception's own message. Flower's
    reason for a ClientApp's exception holds the whole traceback (under Ray, two of them),
    ending ``... occurred. Message: <the exception's message>'>``."""
    lines = [line.strip() for line in reason.strip().splitlines() if line.strip()]
    if not lines:
        return "(no reason given)"
    last = lines[-1]
    _, found, message = last.rpartition("Message: ")
    return (message.removesuffix("'>").strip() or last) if found else last


def check_train_reply(content: RecordDict, reference: ArrayRecord) -> Rejection | None:
    """Why a train reply cannot be aggregated into ``reference``'s model, or None when it can."""
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        return Rejection("records", "expected one ArrayRecord and one MetricRecord")
    arrays = next(iter(content.array_records.values()))
    metrics = next(iter(content.metric_records.values()))
    if set(arrays) != set(reference):
        return Rejection("keys", f"array keys differ from the global model's ({sorted(set(arrays) ^ set(reference))[:3]})")
    for key, ref in reference.items():
        if tuple(arrays[key].shape) != tuple(ref.shape):
            return Rejection("shape", f"array {key!r} has shape {tuple(arrays[key].shape)}, expected {tuple(ref.shape)}")
        if arrays[key].dtype != ref.dtype:
            return Rejection("dtype", f"array {key!r} has dtype {arrays[key].dtype}, expected {ref.dtype}")
        values = arrays[key].numpy()
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            return Rejection("non-finite", f"array {key!r} holds non-finite values")
    return check_metrics(metrics)


def check_statistics_reply(content: RecordDict) -> Rejection | None:
    """Why the first-phase reply of a two-phase round (statistics, no weights) cannot be used."""
    if len(content.array_records) != 0 or len(content.metric_records) != 1:
        return Rejection("records", "expected one MetricRecord and no ArrayRecord (statistics only)")
    return check_metrics(next(iter(content.metric_records.values())))


def check_metrics(metrics: MetricRecord) -> Rejection | None:
    """A positive integer num-examples, finite metrics, rates in [0, 1]."""
    examples = metrics.get(NUM_EXAMPLES)
    if not isinstance(examples, int) or isinstance(examples, bool) or examples <= 0:
        return Rejection("num-examples", f"num-examples={examples!r} is not a positive integer")
    for key, value in metrics.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            return Rejection("metric", f"metric {key!r} is not finite")
        if key.startswith(RATES) and not all(0 <= v <= 1 for v in values):
            return Rejection("firing-rate", f"firing rate {key!r} outside [0, 1]")
    return None
