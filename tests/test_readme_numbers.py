"""The README's result tables are the committed summaries, rendered — never typed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_illusions.seeds import README_END, README_START, readme_block

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "reports" / "summary"


def test_readme_results_block_equals_the_committed_summary():
    """Regenerate the block from reports/summary/ (what `make reproduce` writes) and compare."""
    text = (ROOT / "README.md").read_text()
    assert README_START in text and README_END in text, "README.md lost its generated results block"
    block = README_START + text.split(README_START, 1)[1].split(README_END, 1)[0] + README_END
    assert block == readme_block(SUMMARY), "README numbers differ from reports/summary: run `make reproduce`"


def test_every_summary_the_readme_quotes_is_committed_and_complete():
    index = json.loads((SUMMARY / "index.json").read_text())
    assert set(index["groups"]) == {"dyck", "dyck-sparse", "code", "dyck-llama"}
    # every shipped checkpoint (main seed + checkpoints/<kind>-seed*) has its summary
    for group, names in index["groups"].items():
        shipped = [group, *sorted(p.name for p in (ROOT / "checkpoints").glob(f"{group}-seed*"))]
        assert names == shipped, f"{group}: summaries {names} but checkpoints {shipped}"
    # and every checkpoint folder is in one group: none is left out of the findings
    grouped = {name for names in index["groups"].values() for name in names}
    assert grouped == {p.name for p in (ROOT / "checkpoints").iterdir() if p.is_dir()}
    for names in index["groups"].values():
        for name in names:
            summary = json.loads((SUMMARY / f"{name}.json").read_text())
            assert summary["findings"], f"{name}: no findings"
            for split, groups in summary["original"].items():
                for group, entry in groups.items():
                    lo, hi = entry["ci"]
                    assert lo <= entry["value"] <= hi, (name, split, group)


@pytest.mark.parametrize("marker", [README_START, README_END])
def test_the_block_markers_appear_once(marker):
    assert (ROOT / "README.md").read_text().count(marker) == 1


def _committed(name: str) -> dict:
    return json.loads((SUMMARY / f"{name}.json").read_text())


def test_positions_comparison_says_differs_only_beyond_every_learned_seed_interval():
    import copy

    from hf_illusions.seeds import compare_positions

    learned = [_committed(n) for n in ("dyck", "dyck-seed1", "dyck-seed2")]
    same = copy.deepcopy(learned[1])  # a "rotary" model that is in fact one of the learned seeds
    shifted = copy.deepcopy(learned[1])
    gap = shifted["gaps"]["svd_r8"]["test_unseen_depth"]["close"]["jsd"]
    top = max(s["gaps"]["svd_r8"]["test_unseen_depth"]["close"]["jsd"]["ci"][1] for s in learned)
    gap["value"], gap["ci"] = top + 0.02, [top + 0.01, top + 0.03]

    rows = {(r["proxy"], r["measure"]): r for r in compare_positions({"dyck": learned, "dyck-llama": [same]})}
    assert rows and all(r["verdict"] == "within the seed range" for r in rows.values())
    assert len(rows[("svd_r8", "unseen-depth JSD gap")]["learned"]) == 3

    rows = {
        (r["proxy"], r["measure"]): r for r in compare_positions({"dyck": learned, "dyck-llama": [shifted]})
    }
    assert rows[("svd_r8", "unseen-depth JSD gap")]["verdict"] == "differs"
    assert rows[("svd_r16", "unseen-depth JSD gap")]["verdict"] == "within the seed range"
    assert compare_positions({"dyck": learned}) == []  # nothing to compare without a rotary model
