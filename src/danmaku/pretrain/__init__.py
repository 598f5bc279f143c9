"""Continued BERT pretraining (masked LM + next sentence) with Google-checkpoint interop.

Modules, in the order a reader meets them:

* ``config``      -- ``BertConfig`` (Google's ``bert_config.json``) and presets.
* ``model``       -- ``BertPretrainer``: keras-hub ``BertBackbone`` + Google's MLM/NSP heads.
* ``checkpoints`` -- weights under Google's variable names <-> our model, TF1
  checkpoints and HF safetensors.
* ``loading``     -- ``load_bert(model, ckpt_name=..., tuned_dir=...) -> LoadedBert``:
  the one way ``danmaku embed`` and ``danmaku pretrain eval`` load a model (Google dir,
  export dir, run dir, checkpoint prefix).
* ``instances``   -- Google's ``create_pretraining_data`` algorithm, sharded and streaming.
* ``data``        -- tf.data pipeline over the instance shards.
* ``optimization`` -- Google's AdamWeightDecay / LAMB and the warm-up/decay schedule.
* ``train`` / ``evaluate`` / ``export`` -- the work behind ``danmaku pretrain``; ``export``
  uses ``tokenizer_files`` (HF tokenizer files), ``st_export`` (the sentence-transformers
  folder) and ``model_card`` (the ``README.md`` every export carries).
* ``cli``         -- the ``danmaku pretrain`` Typer app.

For ``danmaku embed``: ``from pretrain.loading import load_bert``;
``bert = load_bert(path)`` gives ``bert.backbone`` (keras-hub ``BertBackbone``
taking ``token_ids``/``segment_ids``/``padding_mask`` and returning
``sequence_output``/``pooled_output``), ``bert.vocab_path`` and ``bert.config``.
"""
