"""The kinds of ablation: what runs an ablation needs, and how they are compared and reported.

`Ablation.kind` (ablations.registry) names one of `KINDS`, one module each:

- ``paired`` (`paired`): a baseline arm and a variant arm, each trained on every
  seed; most claims;
- ``two_evals`` (`two_evals`): two evaluations of the same runs (single_view_eval:
  the baseline runs' ten views against their centre crop);
- ``lr_grid`` (`lr_grid`): each arm's learning rate chosen on a selection seed
  from a grid, by time to a training-error target, then the seeds at that rate
  (Figure 1, §3.1).

The runner, the planner, the analysis and the report loop over ablations and ask
each one's kind (`kind_of`); a new kind of claim is a new module with a `Kind`
(`ablations.kinds.base`) and a line in `KINDS`.
"""

from __future__ import annotations

from ablations.kinds import lr_grid, paired, two_evals
from ablations.kinds.base import Kind, Runs

__all__ = ["KINDS", "Kind", "Runs", "get_kind", "kind_of", "selection_label"]

KINDS: dict = {k.name: k for k in (paired.KIND, two_evals.KIND, lr_grid.KIND)}


def get_kind(name: str) -> Kind:
    if name not in KINDS:
        raise ValueError(f"unknown ablation kind {name!r}; the kinds are: {', '.join(KINDS)}")
    return KINDS[name]


def kind_of(ab) -> Kind:
    """The kind of ablation `ab`; a ValueError naming the kinds if it has none of them."""
    if ab.kind not in KINDS:
        raise ValueError(
            f"ablation {ab.name!r} has kind {ab.kind!r}, which is not a kind of ablation; "
            f"the kinds are: {', '.join(KINDS)}"
        )
    return KINDS[ab.kind]


def selection_label(label: str) -> str | None:
    """The label of the runs that chose the settings of runs labelled `label` (an
    arm's learning-rate grid), or None where no kind makes such runs for it."""
    return next((s for k in KINDS.values() if (s := k.selection_label(label)) is not None), None)
