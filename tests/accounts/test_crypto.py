"""API key generation, checksums and hashing (no database)."""

import re

from accounts import crypto


def test_a_generated_key_has_prefix_lookup_secret_and_checksum():
    key = crypto.generate_key()

    assert re.fullmatch(r"mlp_[0-9A-Za-z]{12}_[0-9A-Za-z]{46}", key.raw)
    assert crypto.parse_lookup(key.raw) == key.lookup
    assert key.hashed == crypto.hash_key(key.raw) and key.raw not in key.hashed


def test_keys_are_unique():
    assert len({crypto.generate_key().raw for _ in range(200)}) == 200


def test_if_one_character_changes_then_the_checksum_refuses_the_key():
    raw = crypto.generate_key().raw
    position = 30
    changed = raw[:position] + ("a" if raw[position] != "a" else "b") + raw[position + 1 :]

    assert crypto.parse_lookup(changed) is None


def test_if_key_is_truncated_or_foreign_then_it_is_malformed():
    raw = crypto.generate_key().raw

    for bad in (
        raw[:-1],
        raw + "x",
        "",
        "Bearer " + raw,
        raw.replace("mlp_", "sk_"),
        "mlp_" + "a" * 60,
    ):
        assert crypto.parse_lookup(bad) is None


def test_key_matches_only_its_own_hash():
    first, second = crypto.generate_key(), crypto.generate_key()

    assert crypto.key_matches(first.raw, first.hashed)
    assert not crypto.key_matches(second.raw, first.hashed)
