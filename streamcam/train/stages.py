"""The backbone in stages, for unfreezing it from the top down (``--unfreeze N``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def unfreeze_groups(model: nn.Module, stage_layers: Sequence[str],
                    head: Sequence[nn.Parameter]) -> list[list[nn.Parameter]]:
    """The backbone's parameters (all but ``head``'s) in groups, the last stage first.

    ``stage_layers`` are the stages' output modules, in order (``Anatomy.stage_layers``:
    ``layer1``..``layer4`` of a ResNet). In registration order, which follows the
    forward pass in these nets, group ``i`` holds what comes after stage ``i - 1``'s
    output module up to and including stage ``i``'s; the first group also holds the
    stem and the earlier stages, the last one anything between the explained layer
    and the head. ``--unfreeze N`` trains the first ``N`` groups returned, and
    ``--unfreeze all`` every one.
    """
    heads = {id(p) for p in head}
    named = [(name, p) for name, p in model.named_parameters() if id(p) not in heads]
    ends = []
    for layer in stage_layers:
        inside = [i for i, (name, _) in enumerate(named) if name == layer or name.startswith(layer + ".")]
        ends.append(max(inside) if inside else (ends[-1] if ends else -1))  # a stage without weights ends where the last did
    ends[-1] = len(named) - 1
    groups, start = [], 0
    for end in ends:
        groups.append([p for _, p in named[start:end + 1]])
        start = end + 1
    return [group for group in reversed(groups) if group]
