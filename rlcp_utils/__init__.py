"""The rlcp study package. The notebooks tell the story; this package holds the parts they share, by role:

    core/      profiles and parameters, model loading and precision, batching, answers, files, outputs, results,
               the manifest, cached analyses, code hashes, progress lines
    data/      facts and templates (facts.py), the training inputs every method reads (inputs.py)
    measures/  recall and RAG scoring, probes, attention, gradients, GSM8K, arithmetic, the unlearning checks
    methods/   one file per training method, each a loss over one training step; registry.py lists the arms
    training/  the one training loop, and jobs (one trained and scored (arm, seed) each, cached by key)
    study/     the claims and their rules, the pipeline runner, the bench, the code the notebooks show

Each folder imports only from the folders above it.
"""

from __future__ import annotations

import warnings

# transformers imports tqdm.auto, which in a notebook kernel without ipywidgets warns with a path of this
# machine in every executed notebook; the study prints its own progress lines (core/progress.py) instead.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
