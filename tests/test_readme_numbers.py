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
    assert set(index["groups"]) == {"dyck", "dyck-sparse", "code"}
    # every shipped checkpoint (main seed + checkpoints/<kind>-seed*) has its summary
    for group, names in index["groups"].items():
        shipped = [group, *sorted(p.name for p in (ROOT / "checkpoints").glob(f"{group}-seed*"))]
        assert names == shipped, f"{group}: summaries {names} but checkpoints {shipped}"
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
