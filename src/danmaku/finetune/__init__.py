"""``danmaku finetune``: sequence classifiers fine-tuned from any model the tool loads.

The model comes from the one loading path, ``danmaku.pretrain.loading.load_bert``
(a Google dir, a run, an export); the head is keras-hub's ``BertTextClassifier``;
the result is an HF ``BertForSequenceClassification`` directory. Modules:

* ``data``       -- labelled CSVs -> checked rows (bad ones counted) -> token ids.
* ``classifier`` -- keras-hub's classifier on the backbone, logits, HF export and reload.
* ``metrics``    -- accuracy, macro-F1, per-class report, confusion matrix (scikit-learn).
* ``train``      -- the resumable, early-stopped, seeded fine-tuning loop.
"""
