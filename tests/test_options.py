"""Each run option is defined once, as a RunConfig field: the parsers, the checks and the Explainer's
arguments are derived from it (streamcam.options)."""

from __future__ import annotations

import pytest

import streamcam
from streamcam.config import RunConfig

BAD_VALUES = [
    ({"batch": 0}, "--batch must be between 1 and 1024, not 0"),
    ({"batch": 1025}, "--batch must be between 1 and 1024, not 1025"),
    ({"top_k": 0}, "--top-k must be at least 1, not 0"),
    ({"alpha": 1.5}, "--alpha must be between 0 and 1, not 1.5"),
    ({"box_threshold": 0.0}, "--box-threshold is a fraction of the map's maximum, in (0, 1], not 0.0"),
    ({"smooth": 1.0}, "--smooth must be at least 0 and below 1, not 1.0"),
    ({"render": "gpu"}, "--render must be one of auto, device, host, not 'gpu'"),
    ({"webcams": (0, -1)}, "--webcam takes a camera index (0, 1, ...), not -1"),
]


@pytest.mark.parametrize("options,message", BAD_VALUES, ids=[next(iter(o)) for o, _ in BAD_VALUES])
def test_each_option_refuses_a_bad_value_in_its_own_words(options, message):
    with pytest.raises(streamcam.InputError) as refused:
        RunConfig(**options)
    assert str(refused.value) == message
