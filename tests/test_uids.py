"""ingest/store/uids.py: each node kind's uid has one builder and one parser, on plain values."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ingest.store import uids
def test_builders_write_the_documented_forms():
    assert uids.class_uid("fashion-resnet", 3) == "fashion-resnet/3"
    assert uids.layer_uid("fashion-resnet", "layer1.0") == "fashion-resnet/layer1.0"
    assert uids.neuron_uid("fashion-resnet", "layer1.0", 7) == "fashion-resnet/layer1.0/7"
    assert uids.concept_uid("m/3/abc", "layer1.0", 7, 2) == "m/3/abc/layer1.0/7/2"
    assert uids.group_uid("m/3/abc", "layer1.0", 4) == "m/3/abc/layer1.0/g4"
    assert uids.crop_uid("ff00", SimpleNamespace(x0=1, y0=2, x1=3, y1=4)) == "ff00/1,2,3,4"


def test_parsers_invert_the_builders_with_slashes_in_the_model_and_circuit():
    assert uids.parse_neuron(uids.neuron_uid("org/model", "fc.2", 11)) == ("org/model", "fc.2", 11)
    assert uids.parse_group(uids.group_uid("org/model/3/abc", "layer2", 0)) == ("org/model/3/abc", "layer2", 0)
    assert uids.short_group("org/model/3/abc/layer2/g5") == "layer2/g5"
    assert uids.short_neuron("org/model/layer2/9") == "layer2/9"


def test_a_neuron_uid_is_not_a_group_uid():
    with pytest.raises(ValueError, match="not a group uid"):
        uids.parse_group("m/layer2/9")


def test_aggregate_and_evaluation_uids_extend_the_node_uids():
    """A NeuronStat / LayerStat is one per (neuron or layer, parameter set); an Evaluation hangs under its circuit."""
    neuron = uids.neuron_uid("m", "layer1.0", 7)
    assert uids.neuron_stat_uid(neuron, "abc") == "m/layer1.0/7@abc"
    assert uids.layer_stat_uid("m", "layer1.0", "abc") == uids.layer_uid("m", "layer1.0") + "@abc"
    assert uids.evaluation_uid("m/3/h", "deletion/layer1/insert") == "m/3/h/eval/deletion/layer1/insert"
