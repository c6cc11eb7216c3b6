"""Faithfulness metric: how closely a simplified proxy's output distributions track the original's."""

import datasets
import evaluate

# Absolute import on purpose: `evaluate.load` copies this file into its own module cache, where
# a relative import has no package to resolve against. The arithmetic lives in the package so the
# evaluation code and this module cannot disagree.
from hf_illusions.metrics.functional import DEFAULT_ATOL, faithfulness

_DESCRIPTION = """
Faithfulness measures how closely a simplified *proxy* of a model (for example one whose attention
is replaced by a low-rank or clustered approximation) reproduces the *original* model's output
distributions, row by row (one row = one prediction, e.g. one token position):

    JSD = mean over rows of  1/2 KL(p || m) + 1/2 KL(q || m),  m = (p + q) / 2,  logs in base 2
    agreement = fraction of rows where argmax p == argmax q

JSD is 0 when the proxy matches the original exactly and 1 when the two put their mass on disjoint
outcomes. Friedman et al. (2024) report both numbers, plus each model's task accuracy, on
in-distribution and out-of-distribution splits: a proxy can look faithful in distribution and not
out of it.
"""


_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`, or a 2-D array/tensor of shape (n_rows, V)): the proxy's
        probability distributions, one row per prediction. Flatten (batch, seq, V) outputs to
        (batch * seq, V) first, and the mask likewise.
    references (`list` of `list` of `float`, same shape as `predictions`): the original model's
        distributions for the same rows.
    labels (`list` of `int`, length n_rows, *optional*): gold class ids in [0, V). When given, the
        task accuracy of both models is reported too. Defaults to None.
    mask (`list` of `bool` or 0/1, length n_rows, *optional*): which rows count (e.g. False for
        padding). Masked-out rows are not validated, and their labels may be -100. Defaults to None
        (every row counts).
    atol (`float`, *optional*): how far a counted row's sum may stray from 1. Defaults to 1e-3.

Returns:
    jsd (`float`): mean Jensen-Shannon divergence (base 2) over counted rows. Minimum 0 (identical),
        maximum 1 (disjoint supports). Lower is more faithful.
    agreement (`float`): fraction of counted rows where both argmaxes agree, in [0, 1]. Higher is
        more faithful.
    n (`int`): number of rows counted.
    accuracy_proxy (`float`, only with `labels`): fraction of counted rows where the proxy's argmax
        is the label, in [0, 1].
    accuracy_original (`float`, only with `labels`): the same for the original model.

Raises:
    FaithfulnessInputError (a `ValueError`): mismatched shapes, NaN/inf, negative values, rows not
        summing to 1, a mask selecting nothing, or labels out of range; the message names the input.

Examples:

    Example 1-The proxy copies the second prediction but moves all mass off the first one.
        >>> import evaluate
        >>> from hf_illusions.metrics import FAITHFULNESS_METRIC_DIR
        >>> faithfulness_metric = evaluate.load(FAITHFULNESS_METRIC_DIR)
        >>> results = faithfulness_metric.compute(
        ...     predictions=[[1.0, 0.0, 0.0], [0.5, 0.25, 0.25]],
        ...     references=[[0.0, 1.0, 0.0], [0.5, 0.25, 0.25]],
        ... )
        >>> print(results)
        {'jsd': 0.5, 'agreement': 0.5, 'n': 2}

    Example 2-The same rows with gold labels: the original is right twice, the proxy once.
        >>> results = faithfulness_metric.compute(
        ...     predictions=[[1.0, 0.0, 0.0], [0.5, 0.25, 0.25]],
        ...     references=[[0.0, 1.0, 0.0], [0.5, 0.25, 0.25]],
        ...     labels=[1, 0],
        ... )
        >>> print(results)
        {'jsd': 0.5, 'agreement': 0.5, 'n': 2, 'accuracy_proxy': 0.5, 'accuracy_original': 1.0}

    Example 3-A mask drops the second row (think padding); its -100 label is then ignored.
        >>> results = faithfulness_metric.compute(
        ...     predictions=[[0.75, 0.25], [1.0, 0.0]],
        ...     references=[[1.0, 0.0], [1.0, 0.0]],
        ...     labels=[0, -100],
        ...     mask=[True, False],
        ... )
        >>> print({k: round(v, 4) for k, v in results.items()})
        {'jsd': 0.1379, 'agreement': 1.0, 'n': 1, 'accuracy_proxy': 1.0, 'accuracy_original': 1.0}
"""


_CITATION = """
@inproceedings{friedman2024interpretability,
  title={Interpretability Illusions in the Generalization of Simplified Models},
  author={Friedman, Dan and Lampinen, Andrew and Dixon, Lucas and Chen, Danqi and Ghandeharioun, Asma},
  booktitle={Proceedings of the 41st International Conference on Machine Learning (ICML)},
  series={Proceedings of Machine Learning Research},
  volume={235},
  pages={14035--14059},
  year={2024},
  eprint={2312.03656},
  archivePrefix={arXiv}
}
@article{lin1991divergence,
  title={Divergence measures based on the {S}hannon entropy},
  author={Lin, Jianhua},
  journal={IEEE Transactions on Information Theory},
  volume={37},
  number={1},
  pages={145--151},
  year={1991},
  doi={10.1109/18.61115}
}
"""

# Inputs as `evaluate` stores them: one example per row, so `add_batch` can stream rows in.
# float32 is what models emit; the arithmetic is float64 regardless.
_FEATURES = datasets.Features(
    {
        "predictions": datasets.List(datasets.Value("float32")),
        "references": datasets.List(datasets.Value("float32")),
    }
)

# How `faithfulness` should name its arguments in errors, in this module's vocabulary (its own
# `references` are the gold labels, which this module calls `labels`).
_ARG_NAMES = {"proxy": "predictions", "original": "references", "references": "labels", "mask": "mask"}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Faithfulness(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_FEATURES,
            reference_urls=["https://arxiv.org/abs/2312.03656", "https://doi.org/10.1109/18.61115"],
        )

    def _compute(self, predictions, references, labels=None, mask=None, atol=DEFAULT_ATOL):
        return faithfulness(predictions, references, labels, mask, atol=atol, arg_names=_ARG_NAMES)
