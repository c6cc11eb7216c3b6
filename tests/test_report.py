"""The Dyck reproduction end to end on tiny data and a tiny random model, plus the report's math.

A random model is enough here: the pipeline's contract (every split × proxy scored, full-rank SVD
exact, resume, report files) does not depend on the model being trained.
"""

from __future__ import annotations

import json
import math

import pytest

from hf_illusions.data.dyck import TEST_SPLITS
from hf_illusions.report import PLOTS, findings, generalization_gap, markdown_tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL = dict(svd_ranks=(1, 16), kmeans_ks=(2, 4), n_fit_sequences=50, max_eval_sentences=32, progress=False)
PROXIES = ("svd_r1", "svd_r16", "kmeans_k2", "kmeans_k4", "onehot", "onehot_l0", "onehot_l1")  # 2-layer model


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_dyck_dir):
    """The shared tiny Dyck folder (conftest) + a tiny random one-head model saved to disk."""
    import torch

    from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM

    root = tmp_path_factory.mktemp("reproduce")
    torch.manual_seed(0)
    model = IllusionForCausalLM(IllusionConfig(d_model=16, n_head=1, d_mlp=32, n_layer=2))
    model.save_pretrained(root / "model")
    return root, tiny_dyck_dir, root / "model"


@pytest.fixture(scope="module")
def first_run(workspace):
    from hf_illusions.reproduction import reproduce_dyck

    root, data, model = workspace
    out = root / "report"
    readme = reproduce_dyck(model, data, out, data_config="tiny", **SMALL)
    return out, readme


def test_results_cover_every_test_split_and_proxy_with_metrics_in_range(first_run):
    out, _ = first_run
    results = json.loads((out / "results.json").read_text())
    assert list(results["splits"]) == list(TEST_SPLITS)
    assert tuple(results["proxies"]) == PROXIES
    for split in TEST_SPLITS:
        for name in PROXIES:
            for group in ("all", "close"):
                res = results["splits"][split][name][group]
                assert math.isfinite(res["jsd"]) and 0 <= res["jsd"] <= 1, (split, name, group)
                assert 0 <= res["agreement"] <= 1, (split, name, group)
            assert set(results["splits"][split][name]["attention_jsd"]) == {"0", "1"}
    assert results["versions"]["torch"] and results["model"]["d_head"] == 16
    assert set(results["timing"]["fit_s"]) == set(PROXIES)


def test_full_rank_svd_is_exact(first_run):
    out, _ = first_run
    results = json.loads((out / "results.json").read_text())
    for split in TEST_SPLITS:
        res = results["splits"][split]["svd_r16"]["all"]
        assert res["jsd"] < 1e-6 and res["agreement"] == 1.0, split


def test_report_has_tables_and_valid_pngs(first_run):
    import matplotlib.image

    out, readme = first_run
    text = readme.read_text()
    for needle in (*TEST_SPLITS, *PROXIES, "Generalization gap", "Attention JSD", "Findings"):
        assert needle in text, needle
    for name in PLOTS:
        png = out / name
        assert png.read_bytes()[:8] == PNG_MAGIC, name
        assert matplotlib.image.imread(png).ndim == 3


def test_resume_skips_finished_splits_and_a_changed_setting_recomputes(workspace, first_run):
    from hf_illusions.reproduction import reproduce_dyck

    _, data, model = workspace
    out, _ = first_run
    split_files = [out / "results" / f"{s}.json" for s in TEST_SPLITS]
    before = [p.stat().st_mtime_ns for p in split_files]

    reproduce_dyck(model, data, out, **SMALL)
    results = json.loads((out / "results.json").read_text())
    assert all(results["resumed"].values())
    assert results["timing"]["fit_s"] == {}  # nothing refitted
    assert [p.stat().st_mtime_ns for p in split_files] == before

    reproduce_dyck(model, data, out, **{**SMALL, "kmeans_ks": (2,)})
    results = json.loads((out / "results.json").read_text())
    assert not any(results["resumed"].values())
    assert "kmeans_k4" not in results["proxies"]
    assert all(p.stat().st_mtime_ns != m for p, m in zip(split_files, before, strict=True))


def hand_made_results() -> dict:
    """Two splits, one SVD sweep and one-hot, numbers chosen so every answer is known."""

    def proxy(jsd: float, agreement: float, accuracy: float) -> dict:
        group = {"n": 10, "jsd": jsd, "agreement": agreement, "accuracy": accuracy}
        return {"all": group, "close": group, "long_distance": group, "attention_jsd": {"0": jsd}}

    original = {g: {"n": 10, "accuracy": 0.8} for g in ("all", "close", "long_distance")}
    return {
        "proxies": {
            "svd_r1": {"family": "svd", "param_name": "rank", "param": 1},
            "svd_r4": {"family": "svd", "param_name": "rank", "param": 4},
            "onehot": {"family": "onehot", "param_name": None, "param": None},
        },
        "splits": {
            "test_iid": {
                "original": original,
                "svd_r1": proxy(0.2, 0.7, 0.6),
                "svd_r4": proxy(0.01, 0.95, 0.8),
                "onehot": proxy(0.1, 0.9, 0.8),
            },
            "test_unseen_depth": {
                "original": original,
                "svd_r1": proxy(0.5, 0.4, 0.3),
                "svd_r4": proxy(0.11, 0.75, 0.7),
                "onehot": proxy(0.1, 0.9, 0.9),
            },
        },
    }


def test_generalization_gap_is_ood_minus_iid():
    gaps = generalization_gap(hand_made_results())
    assert gaps["svd_r1"]["test_unseen_depth"]["jsd"] == pytest.approx(0.3)
    assert gaps["svd_r1"]["test_unseen_depth"]["agreement"] == pytest.approx(-0.3)
    assert gaps["svd_r4"]["test_unseen_depth"]["jsd"] == pytest.approx(0.1)
    assert gaps["onehot"]["test_unseen_depth"] == {"jsd": pytest.approx(0.0), "agreement": pytest.approx(0.0)}
    assert set(gaps["svd_r1"]) == {"test_unseen_depth"}  # the IID split is the reference, not a column


def test_findings_state_measured_facts_one_row_each():
    facts = dict(findings(hand_made_results()))
    (largest,) = [f for f in facts if "largest output-JSD gap" in f]
    assert facts[largest] == "`test_unseen_depth` (+0.133)"
    assert facts["proxy × OOD-split pairs less faithful (higher JSD) than in distribution"] == "2 of 3"
    assert facts["splits where SVD output JSD decreases monotonically with rank"] == "2 of 2"
    # no under-/over-generalization claim without an interval: those come from accuracy_verdict_table
    assert not any("generalizes" in f or "**" in v for f, v in facts.items())
    assert "| `svd_r4` | +0.1 / -0.200 |" in markdown_tables(hand_made_results())


def test_accuracy_verdicts_need_an_interval_that_excludes_zero():
    """Only faithful proxies (IID agreement ≥ 0.95) are judged, and only by their paired interval."""
    from hf_illusions.report_stats import accuracy_verdict_table

    results = hand_made_results()
    depth = results["splits"]["test_unseen_depth"]
    results["splits"]["test_iid"]["onehot"]["close"] = {**depth["onehot"]["close"], "agreement": 0.97}
    results["splits"]["test_iid"]["svd_r4"]["close"] = {**depth["svd_r4"]["close"], "agreement": 0.97}
    depth["onehot"]["close"] = {
        **depth["onehot"]["close"],
        "accuracy_diff": 0.1,
        "ci": {"accuracy_diff": [0.05, 0.15]},
    }
    depth["svd_r4"]["close"] = {
        **depth["svd_r4"]["close"],
        "accuracy_diff": -0.1,
        "ci": {"accuracy_diff": [-0.2, 0.01]},
    }
    rows = _table_rows(accuracy_verdict_table(results, "close"))
    assert rows == [
        ["proxy", "test_unseen_depth"],
        ["`svd_r4`", "within noise -0.1000 [-0.2000, +0.0100]"],
        ["`onehot`", "**over** +0.1000 [+0.0500, +0.1500]"],
    ]  # svd_r1 is not faithful in distribution: not judged


def _table_rows(markdown: str) -> list[list[str]]:
    """The cells of every row of the markdown tables in ``markdown`` (header rows included)."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ]


def _section(text: str, title: str) -> str:
    """The markdown of one ``## title`` section, up to the next ``##`` heading."""
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_findings_are_a_table_with_one_row_per_finding(first_run):
    from hf_illusions.report_stats import FINDING_COLUMNS, with_ci

    out, readme = first_run
    results = json.loads((out / "results.json").read_text())
    findings_table = _section(readme.read_text(), "Findings").split("\n###", 1)[0]
    header, *rows = _table_rows(findings_table)
    assert header == FINDING_COLUMNS
    assert len(rows) == len(results["findings"]) == 4
    for (key, finding), row in zip(results["findings"].items(), rows, strict=True):
        assert row[0].startswith(f"{key}. ") and row[1] == f"**{finding['verdict']}**"
        number = finding.get("key")
        assert row[3] == (with_ci(number, 4) if number else "–")


def test_report_and_results_name_no_absolute_path(workspace, first_run):
    """The model and data live outside the repo here: they are named relative to the report folder."""
    import os

    root, data, _ = workspace
    out, readme = first_run
    results = json.loads((out / "results.json").read_text())
    assert (out / results["model_dir"]).resolve() == (root / "model").resolve()
    assert (out / results["dataset"]["dir"]).resolve() == data.resolve()
    for text in (readme.read_text(), (out / "results.json").read_text()):
        assert str(root) not in text and str(data) not in text and os.getcwd() not in text


def _legends_inside(fig) -> bool:
    """Every legend of ``fig`` (figure- or axes-level) lies within the figure's bounds once drawn."""
    fig.canvas.draw()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    bounds = fig.bbox
    return bool(legends) and all(
        bounds.x0 - 0.5 <= box.x0 and box.x1 <= bounds.x1 + 0.5 and bounds.y0 - 0.5 <= box.y0
        for box in (legend.get_window_extent() for legend in legends)
    )


def test_every_report_figure_keeps_its_legend_inside(first_run):
    from hf_illusions.report_plots import pyplot, report_figures
    from hf_illusions.report_stats import bucket_figure, faithful_representatives

    out, _ = first_run
    results = json.loads((out / "results.json").read_text())
    figures = {name: build() for name, build in report_figures(results).items()}
    names = faithful_representatives(results)[:4] or list(results["proxies"])[:2]
    figures |= {view: bucket_figure(results, names, view) for view in ("depth", "position")}
    assert set(PLOTS) <= set(figures) and all(fig is not None for fig in figures.values())
    for name, fig in figures.items():
        assert _legends_inside(fig), name
        pyplot().close(fig)


def test_long_legends_wrap_instead_of_leaving_the_figure():
    """Twelve long labels on a narrow figure: legend_below takes more rows, not more width."""
    from hf_illusions.report_plots import legend_below, pyplot, subplots

    fig, axes = subplots(2, (6, 3))
    for i in range(12):
        axes[0].plot([0, 1], [i, i], label=f"a rather long proxy name {i} (IID agreement 0.999)")
    legend_below(fig, axes[0])
    assert _legends_inside(fig) and fig.legends[0]._ncols < 5
    pyplot().close(fig)


def test_own_report_figures_keep_their_legends_inside():
    from hf_illusions.own_report import own_figures
    from hf_illusions.report_plots import pyplot

    def entry(v: float) -> dict:
        interval = {"jsd": [v - 0.01, v + 0.01], "agreement": [0.99 - v, 1.01 - v]}
        return {"jsd": v, "agreement": 1 - v, "ci": interval}

    splits = ("validation", "test_a_long_split_name", "test_another_long_split_name")
    proxies = [f"svd_r{r}_of_a_model_with_a_long_name" for r in (1, 2, 4, 8, 16, 32)]
    gap = {"all": {m: {"value": 0.1, "ci": [0.05, 0.15]} for m in ("jsd", "agreement")}}
    results = {
        "proxies": {p: {} for p in proxies},
        "settings": {"reference_split": splits[0]},
        "splits": {s: {p: {"all": entry(0.1 * i)} for i, p in enumerate(proxies)} for s in splits},
        "gaps": {p: {s: gap for s in splits[1:]} for p in proxies},
    }
    for name, build in own_figures(results).items():
        fig = build()
        assert _legends_inside(fig), name
        pyplot().close(fig)
