"""Where the project publishes its artifacts on the Hub, and the tags its Dyck cards share.

Plain names, kept at the bottom of the dependency order: the data builders render their dataset
cards with them (:mod:`hf_illusions.data.hub_folder`), :mod:`hf_illusions.cards` links cards to each
other through them, and :mod:`hf_illusions.hub` pushes to them.
"""

#: Where the project publishes its artifacts; cards link to each other through these ids.
HUB_REPO_IDS = {
    "model": "hf-illusions/dyck-transformer",
    "dataset": "hf-illusions/dyck-illusions",
    "space": "hf-illusions/interpretability-illusions",
    "metric": "hf-illusions/faithfulness",
    # the code task's artifacts: `push model` / `push dataset` pick these for a code folder
    "code_model": "hf-illusions/code-transformer",
    "code_dataset": "hf-illusions/code-illusions",
}

#: Hub tags of every Dyck card (model, dataset, proxy, Space); the code model card has its own.
TAGS = ["hf-illusions", "interpretability", "dyck"]
