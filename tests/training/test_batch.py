"""The batch contract (training.batch): (x, y, sample_id) by position, everything else by name."""

from __future__ import annotations

import logging
from typing import NamedTuple

import pytest
import torch
from torch.utils.data import DataLoader

from training.batch import TrainingItem, parse_batch
from training.module import IndexedDataset
from training.sample_keys import key_id

X = torch.arange(12.0).reshape(3, 4)
Y = torch.tensor([0, 2, 1])
IDS = torch.tensor([7, 8, 9])


def test_a_plain_tuple_is_read_to_sample_id_and_no_further(caplog):
    group = torch.tensor([3.0, 3.0, 5.0])  # a float column that used to be taken as the weight
    with caplog.at_level(logging.WARNING, logger="training.batch"):
        parts = parse_batch((X, Y, IDS, group))
        parse_batch([X, Y, IDS, group])
    assert parts.inputs is X and parts.targets is Y
    assert parts.sample_ids.tolist() == [7, 8, 9] and parts.sample_ids.dtype == torch.int64
    assert parts.weights is None and parts.sample_keys is None
    # said once, naming what is not read and where a weight is read from
    warnings = [r.getMessage() for r in caplog.records if "are ignored" in r.getMessage()]
    assert len(warnings) <= 1
    assert parse_batch((X, Y, IDS)).weights is None


def test_a_named_tuple_gives_its_weight_by_name():
    class Item(NamedTuple):
        x: torch.Tensor
        y: torch.Tensor
        sample_id: torch.Tensor
        group: torch.Tensor
        weight: torch.Tensor

    weight = torch.tensor([1.0, 0.5, 2.0])
    parts = parse_batch(Item(X, Y, IDS, torch.tensor([4, 4, 6]), weight))
    assert parts.weights is weight and parts.sample_ids.tolist() == [7, 8, 9] and parts.targets is Y

    class NoWeight(NamedTuple):
        image: torch.Tensor
        label: torch.Tensor
        index: torch.Tensor
        domain: torch.Tensor

    assert parse_batch(NoWeight(X, Y, IDS, torch.tensor([1.0, 2.0, 3.0]))).weights is None


def test_a_named_tuple_that_puts_weight_or_sample_id_elsewhere_is_refused():
    class WeightThird(NamedTuple):
        x: torch.Tensor
        y: torch.Tensor
        weight: torch.Tensor
        sample_id: torch.Tensor

    with pytest.raises(ValueError, match=r"fields \('x', 'y', 'weight', 'sample_id'\)"):
        parse_batch(WeightThird(X, Y, torch.ones(3), IDS))


def test_a_dict_is_read_by_key():
    weight = torch.tensor([0.0, 1.0, 1.0])
    parts = parse_batch({"image": X, "label": Y, "sample_id": IDS, "group": torch.ones(3), "weight": weight})
    assert parts.inputs is X and parts.targets is Y and parts.weights is weight
    assert parts.sample_ids.tolist() == [7, 8, 9]
    assert parse_batch({"x": X, "y": Y, "sample_id": IDS, "group": torch.ones(3)}).weights is None
    with pytest.raises(ValueError, match="'sample_id' key"):
        parse_batch({"x": X, "y": Y})


def test_the_built_in_dataset_yields_training_items_that_collate_to_one():
    dataset = IndexedDataset(X.numpy(), Y.numpy(), sample_ids=IDS.numpy())
    dataset.weights[1] = 2.5
    assert isinstance(dataset[0], TrainingItem)
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert isinstance(batch, TrainingItem)
    parts = parse_batch(batch)
    assert parts.weights.tolist() == [1.0, 2.5, 1.0]
    assert parts.sample_ids.tolist() == [7, 8, 9] and parts.targets.tolist() == [0, 2, 1]
    torch.testing.assert_close(parts.inputs, X)


def test_string_ids_are_mapped_and_their_keys_kept():
    keys = ["a/001.png", "a/002.png", "b/001.png"]
    parts = parse_batch((X, Y, keys))
    assert parts.sample_keys == tuple(keys)
    assert parts.sample_ids.tolist() == [key_id(k) for k in keys]


def test_what_is_not_a_training_batch_is_refused_naming_the_contract():
    with pytest.raises(ValueError, match=r"\(x, y, sample_id\).*got tuple of length 2"):
        parse_batch((X, Y))
    with pytest.raises(ValueError, match="got Tensor"):
        parse_batch(X)
    with pytest.raises(ValueError, match="sample ids must be integers .* got a tensor of torch.float32"):
        parse_batch((X, Y, torch.tensor([0.5, 1.5, 2.5])))


def test_validation_batches_need_no_ids():
    parts = parse_batch((X, Y), require_ids=False)
    assert parts.targets is Y and parts.sample_ids is None
    # a third element that is not ids is not an error where ids are optional
    parts = parse_batch((X, Y, torch.tensor([0.5, 1.5, 2.5])), require_ids=False)
    assert parts.targets is Y and parts.sample_ids is None
