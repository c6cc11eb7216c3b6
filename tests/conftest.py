"""Shared fixtures: offline environment, a tiny built dataset, a tiny random model."""

from __future__ import annotations

import os
import tempfile

# A private `datasets` cache per test session: the default cache keys local parquet folders in a
# way that can return another folder's data of the same name (see hub_folder.load_folder).
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="hf-illusions-test-datasets-")
# and a private cache of passed data verifications (hf_illusions.reproduction.verified)
os.environ["HF_ILLUSIONS_CACHE"] = tempfile.mkdtemp(prefix="hf-illusions-test-cache-")

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "MPLBACKEND": "Agg",
}.items():
    os.environ.setdefault(_key, _value)

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def single_thread():
    """One thread for torch and BLAS in every test.

    The models here are tiny: on a shared 2-core machine two threads spin against each other and
    run up to ~100x slower, and a fixed thread count keeps CPU summation order (and so bitwise
    resume/determinism checks) stable.
    """
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dyck_dir(tmp_path_factory):
    """The `tiny` preset written once per session as a Hub-style folder."""
    from hf_illusions.data.hub_folder import write_dyck_folder

    return write_dyck_folder(tmp_path_factory.mktemp("data") / "dyck-illusions", config_name="tiny")


@pytest.fixture(scope="session")
def tiny_code_dir(tmp_path_factory):
    """The `tiny` code preset (a few files of 3 packages + held-out ones), written once per session."""
    from hf_illusions.data.code_folder import write_code_folder

    return write_code_folder(tmp_path_factory.mktemp("code") / "code-illusions", config_name="tiny")


def make_tiny_model():
    """A random 2-layer, 2-head model over the Dyck-20 vocabulary (seeded)."""
    from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM

    torch.manual_seed(0)
    config = IllusionConfig(d_model=16, n_head=2, d_mlp=32, n_layer=2, vocab_size=43, n_positions=128)
    return IllusionForCausalLM(config).eval()


@pytest.fixture
def tiny_model():
    """:func:`make_tiny_model`, fresh for each test."""
    return make_tiny_model()


@pytest.fixture(scope="module")
def data() -> list[list[int]]:
    """Twelve short Dyck sentences as token-id lists (seeded), for fitting simplifiers."""
    import random

    from hf_illusions.data.dyck_language import codes_to_ids, sample_sentence

    rng = random.Random(0)
    return [codes_to_ids(sample_sentence(rng, n_types=20, max_length=30)) for _ in range(12)]


@pytest.fixture(scope="module")
def batch(data) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded batch of sequences of different lengths."""
    from hf_illusions.data.batching import pad_batch

    ids, mask = pad_batch(data[:6])
    assert (mask == 0).any()
    return ids, mask
