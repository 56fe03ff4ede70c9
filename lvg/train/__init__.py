"""Datasets, losses, metrics, and the training and evaluation loops (the ``train`` extra).

- data: ``data.py`` (REFER / gREFER datasets; torch-free), ``refer_files.py`` (their files),
  ``torch_data.py`` (the torch ``Dataset``), ``synth/`` (the synthetic dataset generator);
- a run: ``trainer.py`` (the loop), ``state.py`` (checkpoints and exact resume), ``optim.py`` (optimizer and
  schedule), ``run_data.py`` (a run's datasets and tokenizer), ``run_dir.py`` (output directory, log,
  signals), ``distributed.py`` (DDP), ``config.py`` (``TrainConfig``);
- scoring: ``losses.py``, ``metrics.py``, ``evaluate.py`` (any model, through :mod:`lvg.core.outputs`).
"""
