"""Training: the Lightning module, losses, the engine and trainer, checkpoints, loading a run."""

__all__ = [
    "artifacts",
    "baselines",
    "callbacks",
    "checkpoints",
    "data_defaults",
    "domain_adaptation",
    "engine",
    "finding_thresholds",
    "loading",
    "losses",
    "modality_balance",
    "module",
    "optim",
    "prepared_training",
    "pretrain",
    "reproducibility",
    "trainer",
]
