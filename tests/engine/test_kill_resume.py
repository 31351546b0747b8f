"""A tiny run killed at seeded random instants (checkpoint saves, renames, metrics lines,
steps), resumed, maybe killed again, ends bit for bit where an uninterrupted run ends (CPU).

A few trials here; ``scripts/kill_resume_trials.py --trials N`` runs many (same code)."""

from __future__ import annotations

import random

import pytest
from engine.kill_resume import assert_same_run, kill_resume_trial, reference_run, tiny_config

_REFERENCES: dict[int, tuple] = {}


def _reference(every, tmp_path_factory):
    if every not in _REFERENCES:
        out = tmp_path_factory.mktemp(f"reference-every{every}")
        _REFERENCES[every] = (reference_run(tiny_config(every), out), out)
    return _REFERENCES[every]


# Trials of `scripts/kill_resume_trials.py --seed 0` (even: checkpoint_every=0, odd: 2),
# picked for their kills: 2: before best.pt, at its rename, mid-epoch; 20: half a metrics
# line of epoch 1 (no last.pt yet), then after best.pt; 21: after a metrics line, after
# best.pt, at the rename of summary.json; 23: at a rename of last.pt, before a metrics line;
# 24: after epoch 1's metrics line (no last.pt yet: the resume must drop it).
@pytest.mark.parametrize("trial", [2, 20, 21, 23, 24])
def test_a_run_killed_at_random_instants_resumes_to_the_uninterrupted_state(
        tmp_path, tmp_path_factory, trial):
    every = (0, 2)[trial % 2]
    counts, reference = _reference(every, tmp_path_factory)
    kills = kill_resume_trial(tiny_config(every), tmp_path / "run", counts,
                              random.Random(f"0-{trial}"))
    assert kills
    assert_same_run(tmp_path / "run", reference)
