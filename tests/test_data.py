from __future__ import annotations

import torch

from autoshrink.data import spread, stack_inputs


def test_calibration_inputs_from_class_sorted_data_cover_every_class() -> None:
    # An image folder lists its samples class by class: the first 50 would all be class 0.
    labels = torch.arange(10).repeat_interleave(100)
    x = labels.float().unsqueeze(1)
    chosen = stack_inputs((x, labels), 50)
    assert chosen.shape == (50, 1)
    assert len(chosen.unique()) >= 8
    assert torch.equal(chosen, stack_inputs((x, labels), 50))  # seeded: the same every call
    assert len(spread((x, labels), 5000)) == 1000  # fewer samples than asked: all of them
