"""String sample keys -> stable int64 ids (training.sample_keys)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from training.sample_keys import SampleKeyCollision, SampleKeys, key_id, sample_id_tensor


def reference_id(key: str) -> int:
    """The documented derivation, written out independently."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).hexdigest()
    return int(digest, 16) // 2


@pytest.mark.parametrize("key", ["", "0", "img/000001.jpg", "Ünïcødé/数据", "x" * 1000])
def test_a_key_id_is_the_first_63_bits_of_its_blake2b(key):
    value = key_id(key)
    assert value == reference_id(key)
    assert 0 <= value < 2**63


def test_ids_are_the_same_in_another_process_whatever_its_hash_seed():
    keys = ["alpha", "beta", "gamma/δ"]
    code = (
        "from training.sample_keys import key_id; "
        f"print([key_id(k) for k in {keys!r}])"
    )
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed, "PYTHONPATH": "."}).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {str([key_id(k) for k in keys])}


def test_sample_id_tensor_accepts_integer_and_string_ids():
    ids, keys = sample_id_tensor(torch.tensor([[3], [1]], dtype=torch.int32))
    assert ids.dtype == torch.int64 and ids.tolist() == [3, 1] and keys is None
    ids, keys = sample_id_tensor([4, np.int64(5)])
    assert ids.tolist() == [4, 5] and keys is None
    ids, keys = sample_id_tensor(np.array([6, 7], dtype=np.uint16))
    assert ids.tolist() == [6, 7] and keys is None
    ids, keys = sample_id_tensor(("a", "b"))
    assert keys == ("a", "b") and ids.tolist() == [reference_id("a"), reference_id("b")]
    ids, keys = sample_id_tensor(np.array(["a", "b"]))
    assert keys == ("a", "b") and ids.tolist() == [reference_id("a"), reference_id("b")]


@pytest.mark.parametrize(
    "raw, named",
    [
        (torch.tensor([0.0, 1.0]), "tensor of torch.float32"),
        (torch.tensor([True, False]), "tensor of torch.bool"),
        ([1, "b"], "list of int, str"),
        ([True, False], "list of bool"),
        (np.array([0.5]), "NumPy array of float64"),
        ([], "list"),
        (None, "NoneType"),
    ],
)
def test_other_ids_are_refused_naming_what_was_given(raw, named):
    with pytest.raises(ValueError, match=f"must be integers .* or strings .*got (a |an )?{named}"):
        sample_id_tensor(raw)


def test_sample_keys_hands_each_new_key_once():
    keys = SampleKeys()
    first = keys.ids(["a", "b", "a"])
    assert first.tolist() == [reference_id("a"), reference_id("b"), reference_id("a")]
    assert keys.take_new() == {reference_id("a"): "a", reference_id("b"): "b"}
    keys.ids(["b", "c"])
    assert keys.take_new() == {reference_id("c"): "c"}
    assert keys.take_new() == {}
    assert len(keys) == 3
    # integer ids are not keys: nothing to remember
    assert keys.ids(torch.tensor([1, 2])).tolist() == [1, 2] and keys.take_new() == {} and len(keys) == 3


def test_a_collision_between_two_keys_is_refused():
    keys = SampleKeys()
    keys.add(["first"], [42])
    keys.add(["first"], [42])  # the same key again: fine
    with pytest.raises(SampleKeyCollision, match="'first' and 'second' both map to sample_id 42"):
        keys.add(["second"], [42])
    # a real id computed for one key, claimed by another
    with pytest.raises(SampleKeyCollision):
        keys.add(["x", "y"], [key_id("x"), key_id("x")])
