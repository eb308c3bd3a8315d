"""Shared fixtures."""

import pytest


class SimulatedKill(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even `except Exception` handlers)."""


@pytest.fixture
def kill_at_step(monkeypatch):
    """`kill_at_step(n)`: the next training run dies when it starts step n (after everything before it was written)."""
    from trainers.selfplay import Trainer

    original = Trainer.train_step

    def arm(step_to_die: int):
        def train_step(self, step):
            if step == step_to_die:
                raise SimulatedKill(f"killed at the start of step {step}")
            return original(self, step)

        monkeypatch.setattr(Trainer, "train_step", train_step)

    def disarm():
        monkeypatch.setattr(Trainer, "train_step", original)

    arm.disarm = disarm
    arm.error = SimulatedKill
    return arm
