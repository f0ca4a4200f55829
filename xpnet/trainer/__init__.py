"""`xpnet.trainer`: the book's `Trainer`, exact, resumable and quiet on request.

``Trainer(net, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
optimizer='SGD', optimizer_param={'lr': 0.01}, evaluate_sample_num_per_epoch=None,
verbose=True).train()`` works as in the book and fills ``train_loss_list``,
``train_acc_list`` and ``test_acc_list``. Differences, all documented in
docs/training.md:

- an epoch is one shuffled pass over the training set without replacement; the
  last batch of an epoch is smaller when N is not a multiple of the batch size
  (``drop_last=True`` drops it instead);
- accuracy is evaluated once after every epoch (the book evaluates at the start
  of each epoch, so its last entry predates the last epoch);
- losses stay on the net's device and are read back every ``log_every`` steps.

Options beyond the book: ``lr_schedule`` (`schedules`), ``augment`` (`augment`),
``val_split`` and ``early_stopping`` (`validation`), a CSV log always and
``tensorboard`` (`logs`), ``compile`` (`steps`); all resume exactly.

This file only re-exports the public names; it must hold no logic.
"""
from .checkpoint import CHECKPOINT_NAME, HISTORY_NAME, find_checkpoint
from .divergence import TrainingDivergedError
from .folder import FolderInUseError
from .loop import Trainer

__all__ = ["Trainer", "TrainingDivergedError", "FolderInUseError", "find_checkpoint",
           "CHECKPOINT_NAME", "HISTORY_NAME"]
