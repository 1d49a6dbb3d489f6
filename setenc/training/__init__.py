"""Training — the only part of setenc that imports Lightning (and wandb, lazily); install it with `setenc[train]`.

`config` (the typed `TrainConfig`) and `pairs` (positive pairs, set augmentation) need no Lightning;
`module` (LightningModule + DataModule), `run` (`train(cfg)`) and `sweep` (heads x folds x seeds) do.
"""


def train(cfg, resume: bool = False, trainer_options: dict | None = None) -> dict:
    """`setenc.training.run.train`, imported on call so `import setenc.training` stays light."""
    from setenc.training.run import train as _train

    return _train(cfg, resume=resume, trainer_options=trainer_options)
