"""Exact resume, once for every registered method: a run killed during an epoch and resumed gives
the uninterrupted history, checkpoints and method state (the trainer's guarantee, docs/guarantees.md)."""

from __future__ import annotations

import pytest
import torch

from conftest import killed_and_resumed
from ucdir_core.method.registry import METHODS
from ucdir_core.training import runs

#: what each method changes in the tiny config to train in a few seconds; a method registered without
#: a case here fails test_every_registered_method_has_a_resume_case
CASES = {
    "ucdir": {},
    "protoot": dict(method="protoot", optimizer="adam", lr=1e-3, lr_schedule="constant", cross_domain_start=1),
}


def test_every_registered_method_has_a_resume_case():
    assert set(CASES) == set(METHODS)


@pytest.mark.parametrize("method", sorted(CASES))
def test_a_killed_run_resumes_to_the_uninterrupted_history(method, tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg.replace(**CASES[method])
    full, resumed = killed_and_resumed(cfg, tmp_path, monkeypatch, kill_epoch=2)
    assert resumed == full and [r["epoch"] for r in full] == [0, 1, 2]
    assert all(r[f"w_{term}"] > 0 for term in METHODS[method].terms for r in full[2:])  # every term on by the end
    states = [torch.load(tmp_path / name / runs.LAST, weights_only=True) for name in ("full", "killed")]
    assert states[0]["epoch"] == states[1]["epoch"] == 2  # the last epoch done, as the history says
    for key, value in states[0]["method"].items():  # what the method keeps between steps (ProtoOT: prototypes)
        torch.testing.assert_close(states[1]["method"][key], value)
    for name, value in states[0]["model"].items():
        torch.testing.assert_close(states[1]["model"][name], value)


def test_keeping_the_last_checkpoint_only_leaves_last_pt_and_still_resumes(tiny_cfg, tmp_path, monkeypatch):
    """``keep_checkpoints=last`` (the smoke runs): no prev.pt and no best.pt, a third of the disk,
    and a killed run still resumes to the uninterrupted history."""
    from conftest import killed_and_resumed

    cfg = tiny_cfg.replace(keep_checkpoints="last")
    whole, resumed = killed_and_resumed(cfg, tmp_path, monkeypatch, kill_epoch=1)
    assert resumed == whole
    for run in [p for p in tmp_path.iterdir() if (p / "config.json").exists()]:
        names = {p.name for p in run.iterdir()}
        assert "last.pt" in names and not names & {"prev.pt", "best.pt"}, names
    from ucdir_core.companion.experiments import SMOKE
    assert SMOKE["keep_checkpoints"] == "last"
