"""``danmaku tasks``: downstream tasks from the store, and the protocol that compares models on them.

Domain-adaptive pretraining is worth what it buys downstream (Gururangan et
al. 2020, "Don't Stop Pretraining"): the same tasks, base model vs adapted
model, side by side. Modules:

* ``plan``      -- which classes, which split each source goes to (pure, seeded).
* ``make``      -- store -> ``train/dev/test.csv`` + ``sources.csv`` + manifest, streamed.
* ``bootstrap`` -- percentile intervals of accuracy and macro-F1.
* ``probe``     -- logistic regression on frozen ``danmaku embed`` vectors.
* ``evaluate``  -- fine-tune + probe + meme score for every model and task, one table.
"""
