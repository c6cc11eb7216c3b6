"""The proxies of a reproduction: one :class:`ProxySpec` per simplifier setting of the sweep.

A spec is a setting's report name (``svd_r8``, ``kmeans_k64``, ``onehot_l1``, ``circuit_0p01``),
its family and swept parameter, and the unfitted simplifier. :func:`sweep_specs` turns a
:class:`~hf_illusions.config.SweepConfig` into the specs of one model; fitting and scoring them is
:mod:`hf_illusions.reproduction.run`'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from hf_illusions.config import SweepConfig
from hf_illusions.errors import SettingsError, SimplifierError
from hf_illusions.jsonio import jsonable
from hf_illusions.presets import DEFAULT_KMEANS_KS, DEFAULT_SVD_RANKS

#: sequences the circuit pruner fits on (each of its ~110 steps is a pass over all of them)
CIRCUIT_FIT_SEQUENCES = 256


@dataclass
class ProxySpec:
    """One simplifier setting: its report name, family, swept parameter and the simplifier object."""

    name: str
    family: str
    param_name: str | None
    param: int | None
    simplifier: Any = field(repr=False)

    def record(self) -> dict:
        """What results.json stores about this proxy (enough to refit it)."""
        return {
            "family": self.family,
            "param_name": self.param_name,
            "param": self.param,
            "settings": jsonable(self.simplifier.settings()),
        }


def capped_ranks(ranks: Sequence[int], d_head: int) -> list[int]:
    """Ranks above ``d_head`` mean "full rank": cap them there and drop the duplicates."""
    return sorted({min(int(r), d_head) for r in ranks})


def proxy_specs(
    d_head: int,
    svd_ranks: Sequence[int] = DEFAULT_SVD_RANKS,
    kmeans_ks: Sequence[int] = DEFAULT_KMEANS_KS,
    onehot: bool = True,
    layers: Sequence[int] | None = None,
    n_fit_sequences: int = 1000,
    n_layer: int | None = None,
    interaction_basis_ks: Sequence[int] = (),
    seed: int = 0,
) -> list[ProxySpec]:
    """The sweep of the paper: SVD over ranks, k-means over k, and data-independent one-hot.

    Beyond the paper, ``interaction_basis_ks`` adds the interaction-basis simplifier (Bushnaq et
    al. 2024) for each ``k`` (family ``interaction_basis``; none by default).

    With ``n_layer`` given (and no ``layers`` restriction), one-hot attention is also applied to
    each layer alone (``onehot_l{i}``, family ``onehot_layer``): hard attention in a layer that
    counts (uniform attention) and in one that retrieves (sharp attention) fail very differently.
    ``seed`` is every fit's seed (k-means initialization and reservoir samples).
    """
    from hf_illusions.simplify import (
        InteractionBasisSimplifier,
        KMeansSimplifier,
        OneHotSimplifier,
        SVDSimplifier,
    )

    layers = list(layers) if layers is not None else None
    fit = {"layers": layers, "n_sequences": n_fit_sequences, "seed": seed}
    specs = [
        ProxySpec(f"svd_r{r}", "svd", "rank", r, SVDSimplifier(rank=r, **fit))
        for r in capped_ranks(svd_ranks, d_head)
    ]
    specs += [
        ProxySpec(f"kmeans_k{k}", "kmeans", "k", k, KMeansSimplifier(k=k, **fit))
        for k in sorted(set(kmeans_ks))
    ]
    if onehot:
        specs.append(ProxySpec("onehot", "onehot", None, None, OneHotSimplifier(layers=layers)))
        if layers is None and n_layer is not None and n_layer > 1:
            specs += [
                ProxySpec(f"onehot_l{i}", "onehot_layer", "layer", i, OneHotSimplifier(layers=[i]))
                for i in range(n_layer)
            ]
    specs += [
        ProxySpec(f"ib_k{k}", "interaction_basis", "k", k, InteractionBasisSimplifier(k=k, **fit))
        for k in sorted(set(interaction_basis_ks))
    ]
    return specs


def sweep_specs(
    sweep: SweepConfig, families: Sequence[str], geometry: Any, n_fit_sequences: int
) -> list[ProxySpec]:
    """:func:`proxy_specs` of a config's sweep, restricted to ``families`` (circuits and the code
    task's copying-head proxies are added by the task, which knows its model and head)."""
    return proxy_specs(
        geometry.d_head,
        sweep.svd_ranks if "svd" in families else (),
        sweep.kmeans_ks if "kmeans" in families else (),
        sweep.onehot and "onehot" in families,
        sweep.layers,
        n_fit_sequences,
        n_layer=geometry.n_layer,
        interaction_basis_ks=sweep.interaction_basis_ks if "interaction_basis" in families else (),
        seed=sweep.fit_seed,
    )


def copy_head_specs(
    sweep: SweepConfig, families: Sequence[str], d_head: int, layer: int, head: int, n_fit_sequences: int
) -> list[ProxySpec]:
    """The code task's copying head simplified alone: SVD at ``copy_head_ranks``, and one-hot."""
    from hf_illusions.simplify import OneHotSimplifier, SVDSimplifier

    where = {"layers": [layer], "heads": [head]}
    specs = []
    if "svd" in families:
        fit = {"n_sequences": n_fit_sequences, "seed": sweep.fit_seed, **where}
        specs += [
            ProxySpec(f"copy_svd_r{r}", "copy_head_svd", "rank", r, SVDSimplifier(rank=r, **fit))
            for r in capped_ranks(sweep.copy_head_ranks, d_head)
        ]
    if sweep.onehot and "onehot" in families:
        specs.append(ProxySpec("copy_onehot", "copy_head_onehot", None, None, OneHotSimplifier(**where)))
    return specs


def circuit_specs(
    model: torch.nn.Module, fit_rows: Any, slacks: Sequence[float], n_fit_sequences: int, seed: int = 0
) -> list[ProxySpec]:
    """Pruned-circuit proxies (Gao et al. 2025) whose target loss is the model's own loss + slack.

    The model's loss is measured here on the same rows the pruner fits on, so "slack" reads as
    "how much worse than the model the circuit may be" on the training distribution.
    """
    if not slacks:
        return []
    from hf_illusions.sparse.circuit import SparseCircuitPruner

    n = min(n_fit_sequences, CIRCUIT_FIT_SEQUENCES)
    try:
        return [
            ProxySpec(
                f"circuit_{slack:g}".replace(".", "p"),
                "sparse_circuit",
                "target_slack",
                slack,
                SparseCircuitPruner.with_slack(model, fit_rows, slack, n_sequences=n, seed=seed),
            )
            for slack in sorted(set(slacks))
        ]
    except SimplifierError as err:
        raise SettingsError(f"circuit_slacks: {err}") from None


def own_model_families(model: Any) -> dict[str, str]:
    """Family → why it cannot simplify ``model``, for the families that need our own model's seams."""
    from hf_illusions.modeling import IllusionForCausalLM
    from hf_illusions.simplify import InteractionBasisSimplifier
    from hf_illusions.sparse.circuit import SparseCircuitPruner

    if isinstance(model, IllusionForCausalLM):
        return {}
    return {
        "interaction_basis": InteractionBasisSimplifier.requires_own_model,
        "sparse_circuit": SparseCircuitPruner.requires_own_model,
    }


def attention_proxies(attention_metrics: bool | Sequence[str], names: Sequence[str]) -> list[str]:
    """The proxies whose attention JSD / agreement are measured: all, none or those named (sweep order)."""
    if isinstance(attention_metrics, bool):
        return list(names) if attention_metrics else []
    wanted = {attention_metrics} if isinstance(attention_metrics, str) else set(attention_metrics)
    return [name for name in names if name in wanted]
