"""What several test areas share: real artifacts built once per session, a micro model, training fakes and the
DDP worker script. The session fixtures over them (``artifacts``, ``micro``) are in ``tests/conftest.py``.

- :mod:`tests.helpers.artifacts`: a tiny tokenizer, lvg-tiny checkpoints and their ONNX exports;
- :mod:`tests.helpers.micro_model`: lvg-tiny's architecture at 96 x 96 for the many-request tests;
- :mod:`tests.helpers.train_fakes`: a fake grounding dataset of random tensors for the trainer tests;
- :mod:`tests.helpers.ddp_worker`: the script the signal and torchrun tests start.
"""
