"""HQSS config: registry by name, validation, JSON round trip."""
from __future__ import annotations

import json

import pytest

from squeeze.errors import SqueezeError
from squeeze.methods.hqss import HQSSConfig, config_from_dict, list_variants, make_shadow_config


def test_variants_registered() -> None:
    assert set(list_variants()) == {"hqss", "darken", "mask-shadowgan", "paired"}


def test_round_trip_through_json() -> None:
    cfg = make_shadow_config("darken", size=32, seed=3)
    again = config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.variant == "darken" and not again.generative


@pytest.mark.parametrize("fields, match", [
    ({"variant": "hqs"}, "unknown"),
    ({"size": 30}, "multiple of 4"),
    ({"gen_steps": 0}, "gen_steps"),
    ({"w_adv": -1.0}, "w_\\*"),
    ({"min_ratio": 1.5}, "ratio"),
    ({"version": 2}, "version"),
])
def test_validation(fields: dict, match: str) -> None:
    with pytest.raises(SqueezeError, match=match):
        HQSSConfig(**fields)


def test_unknown_field_and_newer_document() -> None:
    with pytest.raises(SqueezeError, match="unknown HQSS option"):
        make_shadow_config("hqss", sizes=64)
    with pytest.raises(SqueezeError, match="newer"):
        config_from_dict({"method": "hqss", "version": 99, "config": {}})
