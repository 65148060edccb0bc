"""Each run option is defined once, as a RunConfig field: the parsers, the checks and the Explainer's
arguments are derived from it (streamcam.options)."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import fields

import pytest

import streamcam
from streamcam.cli import build_export_parser, build_parser
from streamcam.config import RunConfig
from streamcam.engine import pipeline
from streamcam.options import declared, explainer_arguments, parsed

# The command's own options, which set no RunConfig field (--demo chooses the input and output).
CLI_ONLY = {"help", "version", "demo", "debug"}


def actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.dest: action for action in parser._actions}  # argparse offers no public accessor


def on_command_line() -> list:
    return [(item, spec) for item, spec in declared(RunConfig) if spec.on_command_line]


def test_every_command_line_field_is_in_the_parser_as_declared():
    parsed_actions = actions(build_parser())
    assert set(parsed_actions) == {item.name for item, _ in on_command_line()} | CLI_ONLY
    for item, spec in on_command_line():
        action = parsed_actions[item.name]
        assert (action.help, action.metavar) == (spec.help, spec.metavar), item.name
        assert tuple(action.option_strings) == spec.flags, item.name
        assert action.choices == spec.choices, item.name
        default = tuple(action.default) if isinstance(action.default, list) else action.default
        assert default == item.default, item.name


def test_the_parsers_defaults_make_the_default_config():
    assert RunConfig(**parsed(build_parser().parse_args([]), RunConfig)) == RunConfig()


def test_flags_set_their_fields():
    args = build_parser().parse_args(["a.mp4", "b.mp4", "--webcam", "0", "--webcam", "2", "--class", "tabby",
                                      "--no-display", "--no-audio", "--boxes", "--bitrate", "4M", "--top-k", "3"])
    config = RunConfig(**parsed(args, RunConfig))
    assert (config.inputs, config.webcams, config.target_class) == (("a.mp4", "b.mp4"), (0, 2), "tabby")
    assert (config.display, config.audio, config.boxes, config.bitrate, config.top_k) == (False, False, True,
                                                                                        4_000_000, 3)


def test_export_takes_the_model_options_from_the_same_fields():
    export = actions(build_export_parser())
    run = actions(build_parser())
    for name in ("model", "weights", "labels", "layer", "trust_model_file"):
        assert (export[name].option_strings, export[name].default) == (run[name].option_strings, run[name].default)
    for name in ("weights", "trust_model_file"):  # the same words; model, labels and layer have export's own
        assert export[name].help == run[name].help


EXPLAINER_FIELDS = {"model", "weights", "labels", "layer", "layers", "method", "device", "backend", "top_k",
                    "target_class", "box_threshold", "precision", "compile", "trust_model_file"}


def test_explainer_options_are_its_arguments_but_the_views():
    assert set(explainer_arguments(RunConfig)) == EXPLAINER_FIELDS
    # box_threshold is also the view's: run(explainer=ex, box_threshold=...) draws with it
    assert pipeline.EXPLAINER_OPTIONS == EXPLAINER_FIELDS - {"box_threshold"}


def test_explainer_arguments_are_keywords_of_the_explainer_with_the_same_defaults():
    parameters = inspect.signature(streamcam.Explainer.__init__).parameters
    defaults = {item.name: item.default for item in fields(RunConfig)}
    for name in explainer_arguments(RunConfig):
        assert parameters[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        assert parameters[name].default == defaults[name], name


def test_build_explainer_passes_every_argument_by_name(monkeypatch):
    import streamcam.explainer

    monkeypatch.setattr(streamcam.explainer, "Explainer", lambda **arguments: arguments)
    config = RunConfig(top_k=3, box_threshold=0.3, method="gradcam", precision="bf16", compile=True)
    assert pipeline.build_explainer(config) == {name: getattr(config, name) for name in EXPLAINER_FIELDS}


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
