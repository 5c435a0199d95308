"""`neurflow.models.weights` on tiny modules: what a weights file may hold, the one-line
mismatch message, the meta-device build and its fallback for buffers no file holds, and seeded
random weights that leave the global RNG alone."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from neurflow.errors import NeurflowInputError
from neurflow.models.weights import check_match, load_built, load_into, read_state_dict, seeded


class WithScale(nn.Module):
    """A linear layer and a non-persistent buffer: what no state dict holds."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.register_buffer("scale", torch.full((2,), 2.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale


def _state(seed: int = 1) -> dict[str, torch.Tensor]:
    return seeded(lambda: nn.Linear(3, 2), seed).state_dict()


def test_checkpoints_and_data_parallel_prefixes_unwrap_to_the_same_state(tmp_path):
    state = _state()
    forms = {"plain": state, "checkpoint": {"state_dict": state, "epoch": 3},
             "data_parallel": {"model": {f"module.{k}": v for k, v in state.items()}}}
    for name, obj in forms.items():
        torch.save(obj, tmp_path / f"{name}.pt")
        read = read_state_dict(tmp_path / f"{name}.pt")
        assert read.keys() == state.keys() and all(torch.equal(read[k], state[k]) for k in state), name


def test_what_is_not_a_state_dict_is_one_line(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a weights file")
    torch.save({"epoch": 3}, tmp_path / "no_tensors.pt")
    torch.save(nn.Linear(3, 2), tmp_path / "whole.pt")
    for name, what in (("junk.pt", "is not a PyTorch weights file"), ("no_tensors.pt", "is not a state dict"),
                       ("whole.pt", "a pickled torch.nn.modules.linear.Linear (a whole model?)"), ("missing.pt", "not found")):
        with pytest.raises(NeurflowInputError, match=r"weights file .*" + re.escape(what)):
            read_state_dict(tmp_path / name)


def test_a_mismatch_names_missing_and_unexpected_keys_and_shapes(tmp_path):
    state = {"weight": torch.zeros(5, 3), "extra": torch.zeros(1)}
    with pytest.raises(NeurflowInputError) as err:
        check_match("tiny", tmp_path / "w.pt", nn.Linear(3, 2), state)
    assert str(err.value) == (f"weights file {tmp_path / 'w.pt'} does not match tiny: 1 missing keys (bias); "
                              "1 unexpected keys (extra); 1 shape mismatches (file vs model: weight (5, 3) vs (2, 3))")
    check_match("tiny", tmp_path / "w.pt", nn.Linear(3, 2), _state())  # a match says nothing


def test_a_module_built_for_a_file_takes_every_tensor_from_it(tmp_path):
    half = {k: v.half() for k, v in _state().items()}
    module = load_built("tiny", tmp_path / "w.pt", lambda: nn.Linear(3, 2), half)
    assert not any(p.is_meta for p in module.parameters())
    assert module.weight.dtype == torch.float32 and torch.equal(module.weight, half["weight"].float())
    scaled = load_built("tiny", tmp_path / "w.pt", WithScale, {f"fc.{k}": v for k, v in _state().items()})
    assert not scaled.scale.is_meta and torch.equal(scaled.scale, torch.full((2,), 2.0))  # built for real: the buffer kept
    assert torch.equal(scaled.fc.weight, _state()["weight"])
    existing = load_into("tiny", tmp_path / "w.pt", nn.Linear(3, 2), _state(2))
    assert torch.equal(existing.weight, _state(2)["weight"])


def test_seeded_weights_repeat_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = seeded(lambda: nn.Linear(3, 2), 7)
    assert torch.equal(torch.rand(1), expected)
    assert torch.equal(a.weight, seeded(lambda: nn.Linear(3, 2), 7).weight)
    assert not torch.equal(a.weight, seeded(lambda: nn.Linear(3, 2), 8).weight)
