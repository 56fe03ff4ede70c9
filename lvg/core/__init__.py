"""The torch-free contract every layer shares: what a model file is and says about itself, and how text and
images become model inputs and model outputs become answers.

- :mod:`lvg.core.model_file`: :class:`~lvg.core.model_file.ModelFile`, the one place a model path is opened;
- :mod:`lvg.core.artifact` / :mod:`lvg.core.headers`: the metadata every model file carries, and its readers;
- :mod:`lvg.core.tokenizer`: BEiT-3's sentencepiece tokenizer;
- :mod:`lvg.core.image`, :mod:`lvg.core.preprocess`: image loading and the letterbox;
- :mod:`lvg.core.postprocess`: probability map -> mask, box, score, no-target decision;
- :mod:`lvg.core.outputs`: the numpy outputs of a model run, whatever runs it.

Nothing here imports torch; the runtime, the model, training and export build on it.
"""
