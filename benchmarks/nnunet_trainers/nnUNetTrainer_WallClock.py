"""nnU-Net v2's default trainer, stopped by wall clock (used by ``benchmarks/nnunet_side_by_side.py``).

Nothing of nnU-Net's recipe changes (its 250 iterations per epoch, 1000-epoch poly learning-rate
schedule, augmentation, per-epoch pseudo-Dice validation): the run only ends when
``$ICHCT_NNUNET_BUDGET_MIN`` minutes have passed since the first training iteration was due (after
nnU-Net's start-up: dataloaders, dataset unpacking; as ``ichct train --max-minutes`` starts its
clock after caching). The iteration under way finishes; then the run ends as nnU-Net ends one
(``checkpoint_final.pth`` holds the weights reached), and ``nnUNetv2_train`` goes on to its
validation of the fold as usual. nnU-Net's command line finds the class through
``$nnUNet_extTrainer``::

    nnUNet_extTrainer=benchmarks/nnunet_trainers ICHCT_NNUNET_BUDGET_MIN=5 \\
        nnUNetv2_train 990 3d_fullres 0 -tr nnUNetTrainer_WallClock -device cpu

(prediction with the result needs the same variable: nnU-Net looks the class up by name). That
search imports every trainer module of nnU-Net first, some of which need a torchvision that
matches torch; the benchmark builds the class from this file instead.
"""

from __future__ import annotations

import os
import time

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

BUDGET_ENV = "ICHCT_NNUNET_BUDGET_MIN"


class BudgetSpent(Exception):
    """Raised by a training or validation step due after the deadline; ends the run."""


class nnUNetTrainer_WallClock(nnUNetTrainer):  # nnU-Net's naming convention for trainers
    """:class:`nnUNetTrainer` that stops after ``$ICHCT_NNUNET_BUDGET_MIN`` minutes of training."""

    clock_start: float | None = None  # time.perf_counter() when the budget's clock started
    deadline: float | None = None
    stopped_in_epoch: int | None = None
    iterations_done = 0  # training iterations run

    def on_train_start(self) -> None:
        """nnU-Net's start-up, then the clock starts."""
        super().on_train_start()
        minutes = float(os.environ[BUDGET_ENV])
        self.clock_start = time.perf_counter()
        self.deadline = self.clock_start + 60.0 * minutes
        self.print_to_log_file(f"wall-clock budget: {minutes:g} min of training from now")

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            raise BudgetSpent

    def train_step(self, batch: dict) -> dict:
        """One training iteration, unless the budget is spent."""
        self._check_deadline()
        out = super().train_step(batch)
        self.iterations_done += 1
        return out

    def validation_step(self, batch: dict) -> dict:
        """One pseudo-Dice validation iteration, unless the budget is spent."""
        self._check_deadline()
        return super().validation_step(batch)

    def run_training(self) -> None:
        """nnU-Net's training loop, ended like a finished run (``checkpoint_final.pth``) when the budget is spent."""
        try:
            super().run_training()
        except BudgetSpent:
            self.stopped_in_epoch = int(self.current_epoch)
            self.print_to_log_file(f"wall-clock budget spent during epoch {self.current_epoch} "
                                   f"({self.current_epoch} epoch(s) completed, {self.iterations_done} "
                                   f"training iteration(s) in all)")
            self.on_train_end()
