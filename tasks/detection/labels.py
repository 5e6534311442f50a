"""The detector's label set: class names of labels 1..K and their dataset category ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..datamodule import dataset_value


@dataclass
class LabelSet:
    """Names of labels 1..K and label -> category id, from the data module at set-up, else from the checkpoint.

    It travels in the checkpoint (:meth:`save`, :meth:`load`), so predicting, exporting and drawing need no dataset
    to name classes and map labels back to the dataset's ids.
    """

    class_names: list[str] | None = None
    label_to_cat_id: dict[int, int] | None = None

    def read(self, datamodule: Any) -> None:
        """Take the data module's label set where its dataset is on this machine."""
        names, cat_ids = dataset_value(datamodule, "class_names"), dataset_value(datamodule, "label_to_cat_id")
        if names is not None:
            self.class_names = [str(name) for name in names]
        if cat_ids is not None:
            self.label_to_cat_id = {int(label): int(cat) for label, cat in cat_ids.items()}

    def save(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["class_names"], checkpoint["label_to_cat_id"] = self.class_names, self.label_to_cat_id

    def load(self, checkpoint: dict[str, Any]) -> None:
        # The data module's label set (read before the checkpoint is restored) wins when it has one.
        self.class_names = self.class_names or checkpoint.get("class_names")
        self.label_to_cat_id = self.label_to_cat_id or checkpoint.get("label_to_cat_id")
