"""The hf-illusions Space: one Dyck sentence through the model and a simplified proxy of it.

Layout and wiring only (``gr.Blocks``): every number comes from
:class:`hf_illusions.analysis.IllusionExplorer`, which the tests call directly; the helpers here
turn its :class:`~hf_illusions.analysis.SentenceAnalysis` into a figure and HTML tables.

    python spaces_app/app.py [--model checkpoints/dyck] [--data dyck-illusions] [--port 7860]

``--model`` is any folder (or Hub id) of a causal LM over the Dyck vocabulary: ours, or a
``LlamaForCausalLM`` / ``GPT2LMHeadModel`` trained by ``hf-illusions train --task dyck --architecture``.
A folder it cannot serve stops the app with a message saying why (exit status 1, no traceback).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import gradio as gr
from matplotlib.figure import Figure

from hf_illusions.analysis import METHODS, IllusionExplorer, ProxyChoice, SentenceAnalysis
from hf_illusions.argparsing import int_list
from hf_illusions.config import ReproductionConfig
from hf_illusions.errors import IllusionsError
from hf_illusions.hub import HUB_REPO_IDS

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = HERE.parent / "checkpoints" / "dyck"
DEFAULT_DATA = HERE.parent / "dyck-illusions"
DEFAULT_ASSETS = HERE / "assets"
PLOT, SUMMARY = "gap.png", "report.json"
ALL_LAYERS = "all"
EXAMPLES = [
    "(a (b (c (d (e (f (g (h (i (j (k k) j) i) h) g) f) e) d) c) b) a)",
    "(a (b b) (c (d d) c) a)",
    "(q (r r) q) (s (t (a a) t) (b b) s) (c c)",
]
METHOD_LABELS = {"svd": "SVD (rank)", "kmeans": "k-means (k)", "onehot": "one-hot"}
CSS = """
#predictions table, #metrics table, #report-table table { border-collapse: collapse; font-size: 0.85em; }
#predictions td, #predictions th, #metrics td, #metrics th, #report-table td, #report-table th {
  padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: right; }
#predictions tr.disagree { background: #fde2e1; }
#predictions tr.disagree td.proxy { color: #b42318; font-weight: 600; }
#predictions-wrap { max-height: 420px; overflow-y: auto; }
"""


# --------------------------------------------------------------------------- presentation


def _number(value: float | int | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def attention_figure(analysis: SentenceAnalysis, simplified: list[int]) -> Figure:
    """Original (left) and proxy (right) attention of every layer and head, one row each.

    A fixed grid (no constrained layout) and token labels only on the outer axes keep drawing at a
    few hundred milliseconds, most of a request's time.
    """
    rows = [(layer, head) for layer, (orig, _) in analysis.attentions.items() for head in range(len(orig))]
    n = len(analysis.tokens)
    labels = analysis.tokens if n <= 40 else None
    margin = 0.5  # inches under the last row for key labels / the axis title
    height = 0.6 + 3.6 * len(rows) + margin
    fig = Figure(figsize=(8.6, height), dpi=90)
    fig.suptitle(f"attention: original (left) vs proxy {analysis.proxy_name} (right)", fontsize=10)
    grid = fig.add_gridspec(
        len(rows), 3, width_ratios=[1, 1, 0.04], left=0.09, right=0.93, top=1 - 0.6 / height,
        bottom=margin / height, wspace=0.12, hspace=0.3,
    )  # fmt: skip
    for row, (layer, head) in enumerate(rows):
        orig, proxy = analysis.attentions[layer]
        where = f"layer {layer}{' (simplified)' if layer in simplified else ''}, head {head}"
        panels = (
            (orig, f"original: {where}"),
            (proxy, f"proxy: attention JSD {analysis.attention_jsd[layer]:.4f}"),
        )
        for col, (weights, title) in enumerate(panels):
            ax = fig.add_subplot(grid[row, col])
            image = ax.imshow(
                weights[head], cmap="Blues", vmin=0, vmax=1, interpolation="nearest", aspect="auto"
            )
            ax.set_title(title, fontsize=9)
            last, first = row == len(rows) - 1, col == 0
            if labels:
                ax.set_xticks(range(n), labels if last else [], rotation=90, fontsize=6)
                ax.set_yticks(range(n), labels if first else [], fontsize=6)
            else:
                ax.tick_params(labelbottom=last, labelleft=first, labelsize=7)
            if first:
                ax.set_ylabel("query position", fontsize=8)
            if last and not labels:
                ax.set_xlabel("key position", fontsize=8)
    fig.colorbar(image, cax=fig.add_subplot(grid[:, 2]), label="attention weight")
    return fig


def predictions_html(analysis: SentenceAnalysis) -> str:
    """Per-position table; rows where the proxy's top prediction differs are highlighted."""
    head = (
        "<tr><th>pos</th><th>reads</th><th>next</th><th>original top</th><th>proxy top</th>"
        "<th>p(next) original</th><th>p(next) proxy</th><th>JSD</th>"
        "<th>scored close original / proxy</th></tr>"
    )
    rows = []
    for p in analysis.predictions:
        scored = f"{p.original_close} / {p.proxy_close}" if p.is_close else ""
        kind = " long-distance" if p.is_long_distance else ""
        rows.append(
            f'<tr class="{"agree" if p.agree else "disagree"}{kind}" data-position="{p.position}">'
            f"<td>{p.position}</td><td>{html.escape(p.context)}</td><td>{html.escape(p.target)}</td>"
            f"<td>{html.escape(p.original)}</td><td class='proxy'>{html.escape(p.proxy)}</td>"
            f"<td>{p.p_target_original:.3f}</td><td>{p.p_target_proxy:.3f}</td><td>{p.jsd:.4f}</td>"
            f"<td>{html.escape(scored)}</td></tr>"
        )
    return f'<div id="predictions-wrap"><table>{head}{"".join(rows)}</table></div>'


def metrics_html(analysis: SentenceAnalysis) -> str:
    """Per-group faithfulness of this sentence (cells carry ``data-metric="group.metric"``)."""
    columns = ("n", "jsd", "agreement", "agreement_full", "accuracy_original", "accuracy_proxy")
    titles = {"agreement": "agreement (closing brackets)", "agreement_full": "agreement (whole vocabulary)"}
    head = (
        "<tr><th>positions</th>"
        + "".join(f"<th>{titles.get(c, c.replace('_', ' '))}</th>" for c in columns)
        + "</tr>"
    )
    body = "".join(
        f"<tr><td>{group.replace('_', '-')}</td>"
        + "".join(f'<td data-metric="{group}.{c}">{_number(values.get(c))}</td>' for c in columns)
        + "</tr>"
        for group, values in analysis.metrics.items()
    )
    return f"<table>{head}{body}</table>"


def report_table_html(report: dict | None, choice: ProxyChoice, analysis: SentenceAnalysis | None) -> str:
    """The chosen setting's per-split faithfulness from the precomputed report, next to this sentence's."""
    if report is None:
        return ""
    name = choice.report_name
    per_split = report["faithfulness"].get(name) if name else None
    if per_split is None:
        return (
            f"<p>The report has no per-split numbers for {html.escape(choice.name)}: it simplifies every "
            f"layer (one-hot also one layer at a time). Pick layer “{ALL_LAYERS}” to compare.</p>"
        )
    rows = [
        f"<tr><td>{html.escape(split)}</td><td>{_number(res['close'].get('jsd'))}</td>"
        f"<td>{_number(res['close'].get('agreement'))}</td></tr>"
        for split, res in per_split.items()
    ]
    if analysis is not None:
        close = analysis.metrics["close"]
        rows.append(
            f"<tr><td><b>this sentence</b></td><td>{_number(close['jsd'])}</td>"
            f"<td>{_number(close['agreement'])}</td></tr>"
        )
    head = f"<tr><th>{html.escape(name)}: split</th><th>JSD (closes)</th><th>agreement (closes)</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def model_note(explorer: IllusionExplorer) -> str:
    """Which model is loaded, its head geometry, and which simplifier families it cannot have, and why.

    The Space offers SVD, k-means and one-hot for every model it loads (they act at transformers'
    attention seam); the interaction basis and sparse circuits need our own model's seams, so for
    a stock model (Llama, GPT-2, …) the note says they are left out instead of offering a control
    that would fail.
    """
    from hf_illusions.reproduction import own_model_families

    geometry = explorer.bank.geometry
    kv = f", {geometry.n_kv_head} key/value heads" if geometry.n_kv_head != geometry.n_head else ""
    note = (
        f"Model: `{type(explorer.model).__name__}` · {geometry.n_layer} layers × {geometry.n_head} heads"
        f"{kv} (d_head {geometry.d_head}) · Dyck-{explorer.task.vocab.n_types}."
    )
    missing = own_model_families(explorer.model)
    if missing:
        note += "".join(
            f" **{family.replace('_', ' ')}** is not offered for this model: {reason}."
            for family, reason in missing.items()
        )
    return note


def load_report(assets: Path, weights: str) -> tuple[str | None, dict | None, str]:
    """(plot path, per-split summary, note) from ``assets/``; a clear note when anything is missing."""
    plot, summary_file = assets / PLOT, assets / SUMMARY
    if not plot.is_file():
        return (
            None,
            None,
            (
                f"No precomputed report plot in `{assets}`. Make one with `hf-illusions reproduce dyck`, "
                "then copy it here with `hf-illusions card space --report reports/dyck`."
            ),
        )
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    note = (
        "The report's generalization gap: each bar is a proxy's faithfulness on an OOD split "
        "minus its faithfulness on `test_iid`."
    )
    if summary is not None and summary.get("weights_sha256_16") not in (None, weights):
        note += (
            f" ⚠️ The report was made for `{summary.get('model_dir')}`, whose weights differ from the model "
            "loaded here: compare its numbers with care."
        )
    return str(plot), summary, note


# --------------------------------------------------------------------------- the Space


def build_demo(explorer: IllusionExplorer, assets: Path = DEFAULT_ASSETS) -> gr.Blocks:
    """Lay out the Space and wire its events to ``explorer``."""
    from hf_illusions.fingerprints import weights_hash

    options = explorer.bank.options
    n_layer = explorer.bank.n_layer
    plot, report, report_note = load_report(Path(assets), weights_hash(explorer.model))
    splits = explorer.splits
    default_split = "test_unseen_depth" if "test_unseen_depth" in splits else splits[-1]
    rng = random.Random()

    def setting_props(method: str) -> dict[str, Any]:
        choices = options.get(method, [])
        label = f"{METHOD_LABELS[method]}: " + ("setting" if choices else "no setting to choose")
        default = choices[len(choices) // 2] if choices else None
        return {"choices": choices, "value": default, "interactive": bool(choices), "label": label}

    def setting_update(method: str) -> dict:
        return gr.update(**setting_props(method))

    def choice_of(method: str, setting: Any, layer: str) -> ProxyChoice:
        layers = None if layer == ALL_LAYERS else (int(layer),)
        return ProxyChoice(method, None if method == "onehot" else setting, layers)

    def analyze(sentence: str, method: str, setting: Any, layer: str) -> tuple:
        try:
            choice = choice_of(method, setting, layer)
            analysis = explorer.analyze(sentence or "", choice)
        except IllusionsError as err:
            return (f"**Not analysed:** {html.escape(str(err))}", None, None, None, "", None, "", "")
        close = analysis.metrics["close"]
        where = "every layer" if choice.layers is None else f"layer {choice.layers[0]}"
        status = (
            f"**Analysed** {analysis.n_brackets} brackets · proxy `{choice.name}` ({where} simplified) · "
            f"{len(analysis.disagreements)} of {len(analysis.predictions)} next-token predictions differ · "
            f"analysed in {analysis.seconds * 1000:.0f} ms"
        )
        figure = attention_figure(
            analysis, list(range(n_layer)) if choice.layers is None else list(choice.layers)
        )
        return (
            status,
            close["jsd"],
            close["agreement"],
            len(analysis.disagreements),
            metrics_html(analysis),
            figure,
            predictions_html(analysis),
            report_table_html(report, choice, analysis),
        )

    def sample(split: str) -> str:
        return explorer.sample(split, rng)

    with gr.Blocks(title="Interpretability illusions") as demo:
        gr.Markdown(
            "# Interpretability illusions, one sentence at a time\n"
            "A simplified *proxy* of a transformer (low-rank or clustered keys and queries, one-hot "
            "attention) can match it on familiar sentences and part ways on new kinds — Friedman et al., "
            "*Interpretability Illusions in the Generalization of Simplified Models* (ICML 2024). Type or "
            "sample a Dyck sentence, pick a simplifier, and compare the two models position by position."
        )
        with gr.Row():
            with gr.Column(scale=3):
                sentence = gr.Textbox(
                    value=EXAMPLES[0],
                    label="Dyck sentence (space-separated brackets: (a … a), types a–"
                    f"{explorer.task.vocab.letters[-1]})",
                    placeholder="(a (b b) a)",
                    max_lines=4,
                    elem_id="sentence",
                )
                with gr.Row():
                    split = gr.Dropdown(
                        splits, value=default_split, label="split to sample from", elem_id="split"
                    )
                    sample_button = gr.Button("Sample a sentence", elem_id="sample")
                gr.Examples(EXAMPLES, inputs=sentence, label="examples")
            with gr.Column(scale=2):
                method = gr.Radio(
                    [(METHOD_LABELS[m], m) for m in METHODS],
                    value="svd",
                    label="simplifier",
                    elem_id="method",
                )
                setting = gr.Dropdown(elem_id="setting", **setting_props("svd"))
                layer = gr.Radio(
                    [ALL_LAYERS, *map(str, range(n_layer))],
                    value=ALL_LAYERS,
                    label="simplified layer(s)",
                    elem_id="layer",
                )
                analyze_button = gr.Button("Analyse", variant="primary", elem_id="analyze")
                gr.Markdown(model_note(explorer), elem_id="model-note")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            jsd = gr.Number(label="JSD at closing brackets (this sentence)", precision=6, elem_id="jsd")
            agreement = gr.Number(label="agreement at closing brackets", precision=6, elem_id="agreement")
            disagreements = gr.Number(
                label="positions where the top prediction differs", elem_id="disagreements"
            )
        metrics = gr.HTML(elem_id="metrics")
        attention = gr.Plot(label="attention maps", format="png", elem_id="attention")
        predictions = gr.HTML(elem_id="predictions")
        with gr.Accordion("Across splits: the precomputed report", open=True):
            gr.Markdown(report_note, elem_id="report-note")
            if plot is not None:
                gr.Image(
                    plot, label="generalization gap (OOD − IID)", interactive=False, elem_id="report-plot"
                )
            report_table = gr.HTML(elem_id="report-table")

        inputs = [sentence, method, setting, layer]
        outputs = [status, jsd, agreement, disagreements, metrics, attention, predictions, report_table]
        for event in (analyze_button.click, sentence.submit, setting.input, layer.input):
            event(analyze, inputs, outputs)
        method.input(setting_update, method, setting).then(analyze, inputs, outputs)
        sample_button.click(sample, split, sentence).then(analyze, inputs, outputs)
        demo.load(analyze, inputs, outputs)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=os.environ.get("HF_ILLUSIONS_MODEL")
        or (str(DEFAULT_MODEL) if DEFAULT_MODEL.exists() else HUB_REPO_IDS["model"]),
        help="save_pretrained folder or Hub id of a Dyck model: ours, or a Llama / GPT-2 one from "
        "`train --architecture` (env HF_ILLUSIONS_MODEL; default checkpoints/dyck)",
    )
    parser.add_argument(
        "--data",
        default=os.environ.get("HF_ILLUSIONS_DATA") or str(DEFAULT_DATA),
        help="dyck-illusions folder, built if missing (env HF_ILLUSIONS_DATA)",
    )
    parser.add_argument("--assets", default=str(DEFAULT_ASSETS), help="folder with the report's gap.png")
    parser.add_argument(
        "--n-fit-sequences",
        type=int,
        default=None,
        help="training sentences to fit on (default: the report's)",
    )
    parser.add_argument("--svd-ranks", type=int_list, default=None, help="e.g. 1,2,4 (default: the report's)")
    parser.add_argument("--kmeans-ks", type=int_list, default=None, help="e.g. 2,8 (default: the report's)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for this model)")
    return parser.parse_args(argv)


def space_config(args: argparse.Namespace) -> ReproductionConfig:
    """What the Space fits: the config of `hf-illusions reproduce dyck` with --model and --data (and
    any --svd-ranks / --kmeans-ks / --n-fit-sequences given)."""
    given = {
        "n_fit_sequences": args.n_fit_sequences,
        "svd_ranks": args.svd_ranks,
        "kmeans_ks": args.kmeans_ks,
    }
    changes = {name: value for name, value in given.items() if value is not None}
    return ReproductionConfig.for_task("dyck", model=args.model, data=args.data, **changes)


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        # the Dyck reproduction's config, with this model and data: the proxies are the report's
        config = space_config(args)
        explorer = IllusionExplorer.from_config(config)
    except IllusionsError as err:  # a folder the Space cannot serve: say why, no traceback
        raise SystemExit(f"app.py: cannot serve --model {args.model} (--data {args.data}): {err}") from None
    print(
        f"loaded {args.model} and fitted {len(explorer.bank.specs)} settings × "
        f"{explorer.bank.n_layer} layers in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    build_demo(explorer, Path(args.assets)).launch(
        server_name=args.host, server_port=args.port, css=CSS, allowed_paths=[args.assets]
    )


if __name__ == "__main__":
    main()
