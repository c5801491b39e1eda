"""Training: the Lightning module, losses, the engine and trainer, checkpoints, loading a run."""

__all__ = [
    "artifacts",
    "baselines",
    "checkpoints",
    "data_defaults",
    "domain_adaptation",
    "finding_thresholds",
    "loading",
    "losses",
    "modality_balance",
    "module",
    "prepared_training",
    "pretrain",
    "reproducibility",
    "trainer",
]
