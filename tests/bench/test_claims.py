"""``squeeze bench claims``: verdicts, row selection and the page, on hand-made result files and the committed ones."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from squeeze.bench.claims import CLAIMS, Claim, markdown, measure, run, verdict
from squeeze.errors import SqueezeError

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def _s(mean: float, std: float, n: int) -> dict:
    return {"method": "m", "mean": mean, "std": std, "n": n}


def test_verdict_applies_the_tie_rule_in_the_claimed_direction() -> None:
    assert verdict(_s(90.0, 0.2, 3), _s(89.0, 0.3, 3), lower_is_better=False) == "holds"
    assert verdict(_s(90.0, 0.2, 3), _s(89.8, 0.3, 3), lower_is_better=False) == "tie"
    assert verdict(_s(88.0, 0.2, 3), _s(89.0, 0.3, 3), lower_is_better=False) == "reversed"
    assert verdict(_s(4.1, 0.01, 3), _s(3.9, 0.0, 1), lower_is_better=True) == "reversed"
    assert verdict(_s(3.8, 0.01, 3), _s(3.9, 0.0, 1), lower_is_better=True) == "holds"
    # one run on each side: no std to judge a tie by, so the verdict says it only has the sign
    assert verdict(_s(90.0, 0.0, 1), _s(89.9, 0.0, 1), lower_is_better=False) == "ahead on one seed"


def _row(method: str, quant: float, seed: int = 0, wbits: int = 4, metric: str = "top1", model: str = "toy") -> dict:
    return {"model": model, "method": method, "wbits": wbits, "abits": 4, "metric": metric, "quant": quant,
            "seed": seed}


def test_measure_picks_rows_the_best_baseline_and_overrides(tmp_path: Path) -> None:
    rows = ([_row("new", q, s, wbits=2) for s, q in enumerate((80.0, 81.0, 82.0))]
            + [_row("weak", 60.0, s) for s in range(3)] + [_row("strong", q, s) for s, q in enumerate((70.0, 71.0))]
            + [_row("strong", 99.0, 0, wbits=2), _row("new", 10.0, 0, metric="psnr")])
    (tmp_path / "page.json").write_text(json.dumps(rows))
    claim = Claim("P", "c", "toy", "page", "new", ("weak", "strong"), {"model": "toy", "wbits": 2, "metric": "top1"},
                  baseline_where={"wbits": 4})
    m = measure(claim, tmp_path)
    assert m["ours"] == {"method": "new", "mean": 81.0, "std": 1.0, "n": 3}
    assert m["baseline"]["method"] == "strong" and m["baseline"]["mean"] == pytest.approx(70.5)
    assert m["gap"] == pytest.approx(10.5)
    assert m["gap_se"] == pytest.approx((1.0 / 3 + 0.5 / 2) ** 0.5)
    assert m["verdict"] == "holds"
    lower = Claim("P", "c", "toy", "page", "new", ("weak", "strong"), {"model": "toy", "wbits": 4, "metric": "top1"},
                  lower_is_better=True)
    assert measure(lower, tmp_path)["verdict"].startswith("not measured: page.json lacks")
    missing = Claim("P", "c", "toy", "absent", "new", ("weak",), {"metric": "top1"})
    assert measure(missing, tmp_path)["verdict"] == "not measured: no absent.json"
    for text, needle in (("{not json", "not valid JSON"), ('{"rows": []}', "not a list of result rows")):
        (tmp_path / "page.json").write_text(text)
        with pytest.raises(SqueezeError, match=needle):
            measure(claim, tmp_path)


def test_page_gives_a_standard_error_only_with_seeds_on_both_sides(tmp_path: Path) -> None:
    rows = [_row("new", 81.0), _row("new", 82.0, 1), _row("old", 80.0)]
    (tmp_path / "page.json").write_text(json.dumps(rows))
    claim = Claim("P", "c", "toy", "page", "new", ("old",), {"metric": "top1"}, paper_gap=15.52)
    page = markdown([measure(claim, tmp_path)])
    line = next(x for x in page.splitlines() if x.startswith("| P |"))
    assert "| new 81.50 ± 0.71 (2) | old 80.00 (1) | +1.50 points | +15.52 | **holds** |" in line
    assert "Of 1 comparisons: holds 1." in page


def test_a_claim_on_an_unknown_metric_and_a_missing_folder_fail_loudly(tmp_path: Path) -> None:
    with pytest.raises(SqueezeError, match="where\\['metric'\\]"):
        Claim("P", "c", "toy", "page", "new", ("old",), {"metric": "accuracy"})
    with pytest.raises(SqueezeError, match="not a folder"):
        run(tmp_path / "nowhere")


def test_every_claim_finds_its_rows_in_the_committed_results() -> None:
    for claim in CLAIMS:
        m = measure(claim, RESULTS)
        assert not m["verdict"].startswith("not measured"), (claim.paper, claim.setting, m["verdict"])


def test_run_writes_the_page_and_its_json(tmp_path: Path) -> None:
    rows = [_row("spdfq", 88.0, model="vit-fmnist"), _row("psaq-vit", 87.0, model="vit-fmnist")]
    (tmp_path / "dfq.json").write_text(json.dumps(rows))
    run(tmp_path)
    measured = json.loads((tmp_path / "claims.json").read_text())
    assert len(measured) == len(CLAIMS)
    spdfq = next(m for m in measured if m["page"] == "dfq")
    assert spdfq["verdict"] == "ahead on one seed" and spdfq["gap"] == pytest.approx(1.0)
    assert all(m["verdict"].startswith("not measured") for m in measured if m["page"] != "dfq")
    assert (tmp_path / "claims.md").read_text().startswith("# The papers' claims at our scale")


def test_the_committed_page_is_current() -> None:
    # a results page rewritten without `squeeze bench claims` afterwards leaves claims.md stale
    page = markdown([measure(c, RESULTS) for c in CLAIMS])
    assert (RESULTS / "claims.md").read_text() == page, "run `squeeze bench claims` to refresh docs/results/claims.md"
