"""Plain training, nothing recorded: the cleanlab baseline's cross-validation folds and the
cost section's "training alone".

The folds are trained by the same code as ``trainmap train`` (``training.run``'s model,
``Classifier`` with AdamW and the one-cycle schedule, the task's batch size and learning rate,
the same Trainer flags) but without the recorder: cleanlab needs each held-out sample's full
predicted probability vector, which a recorded run does not keep (it keeps the predicted class),
and a fold's run trained on 80 % of the samples would be an odd run in the dashboard beside the
ordinary ones. Each fold is a fresh model trained on the fold's training part and predicting
the held-out part (Northcutt et al. 2021, confident learning).
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np


def quiet() -> None:
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")


def fit_predict(task: str, model_name: str, epochs: int, seed: int, labels: np.ndarray,
                train_positions: np.ndarray, predict_positions: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Train ``model_name`` on ``task``'s training samples at ``train_positions`` with ``labels``
    for ``epochs``; return the softmax probabilities of the samples at ``predict_positions``
    (none: an empty array) and the training's wall time in seconds."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from training.models import build_model
    from training.module import Classifier, IndexedDataset
    from training.tasks import load_task

    quiet()
    data = load_task(task)
    L.seed_everything(seed, workers=True, verbose=False)
    train_positions = np.asarray(train_positions)
    dataset = IndexedDataset(data.train_x[train_positions], np.asarray(labels)[train_positions], train_positions)
    model = build_model(model_name, data.input_shape, data.num_classes)
    module = Classifier(model, lr=data.default_lr)
    loader = DataLoader(dataset, batch_size=data.default_batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False, deterministic=True,
                        num_sanity_val_steps=0)
    started = time.perf_counter()
    try:
        trainer.fit(module, train_dataloaders=loader)
    except SystemExit:
        # Lightning answers Ctrl-C with sys.exit(1) after its own shutdown: say it was an
        # interrupt, as trainmap train does, so the command stops with exit status 130
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    seconds = time.perf_counter() - started
    if predict_positions is None or len(predict_positions) == 0:
        return np.zeros((0, data.num_classes)), seconds
    model.eval()
    with torch.no_grad():
        x = torch.as_tensor(data.train_x[np.asarray(predict_positions)])
        probs = torch.cat([torch.softmax(model(chunk), dim=1) for chunk in torch.split(x, 512)]).numpy()
    return probs.astype(np.float64), seconds


def cross_validated_probs(task: str, model_name: str, epochs: int, seed: int, labels: np.ndarray,
                          folds: int) -> tuple[np.ndarray, float]:
    """Out-of-fold predicted probabilities of every training sample (stratified ``folds``-fold,
    shuffled with ``seed``) and the folds' summed training time."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    probs = np.zeros((len(labels), int(labels.max()) + 1))
    total = 0.0
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (train_idx, held_idx) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold_probs, seconds = fit_predict(task, model_name, epochs, seed * 100 + fold, labels, train_idx, held_idx)
        probs[held_idx, : fold_probs.shape[1]] = fold_probs
        total += seconds
    return probs, total


def cleanlab_scores(task: str, model_name: str, epochs: int, seed: int, noise: float,
                    folds: int) -> dict[str, object]:
    """cleanlab on the task's noisy labels (``--label-noise noise``, noise seed 0, as the runs):
    AUROC and precision at the noise rate of its label-quality scores (self-confidence, low =
    likelier an issue), and ``find_label_issues``' flagged samples, their precision and recall."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    from training.evidence.metrics import detection
    from training.tasks import load_task, symmetric_label_noise

    data = load_task(task)
    noisy = symmetric_label_noise(data.train_y, noise, data.num_classes, 0)
    probs, seconds = cross_validated_probs(task, model_name, epochs, seed, noisy.label, folds)
    quality = get_label_quality_scores(noisy.label, probs)
    flags = find_label_issues(noisy.label, probs, n_jobs=1)
    flipped = noisy.label_noisy
    found = int((flags & flipped).sum())
    return {
        "train_seconds": seconds,
        "folds": folds,
        "cv_accuracy_on_given_labels": float((probs.argmax(1) == noisy.label).mean()),
        "label_quality": detection(-quality, flipped),
        "find_label_issues": {"flagged": int(flags.sum()), "precision": found / max(int(flags.sum()), 1),
                              "recall": found / max(int(flipped.sum()), 1)},
    }
