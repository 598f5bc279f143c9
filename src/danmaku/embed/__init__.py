"""``danmaku embed``: sentence vectors from a (tuned) BERT, the meme picture, a score, a service.

The study's last step ran bert-as-service on top of the tuned checkpoint; this
package replaces it on current Keras/TensorFlow. The model comes from the one
loading path, ``danmaku.pretrain.loading.load_bert``; nothing here re-implements BERT.

Modules, in the order a reader meets them:

* ``texts``      -- input lines -> texts (the empty-line rule), phrase files.
* ``pooling``    -- bert-as-service's pooling strategies and layer indices.
* ``features``   -- per-layer token vectors cut out of keras-hub's ``BertBackbone``.
* ``encoder``    -- tokenize, frame ``[CLS] .. [SEP]``, length-planned batches, pool.
* ``models``     -- MODEL / NAME=MODEL arguments -> ``Encoder`` via ``load_bert``.
* ``npy_stream`` / ``stream`` -- the resumable, flat-memory ``.npy`` writer and loop.
* ``neighbors`` / ``score`` -- cosine neighbours; group mean reciprocal rank.
* ``fonts`` / ``plot``      -- CJK font check; PCA + t-SNE picture.
* ``batching``   -- the service's token-bounded batches and bounded queue, one model thread.
* ``metrics``    -- its Prometheus metrics (a registry per app) and ``/status`` counters.
* ``serving``    -- what its routes share: app keys, limits, errors, encoding a request.
* ``routes_openai`` -- ``POST /v1/embeddings``, ``GET /v1/models`` in OpenAI's shape.
* ``service``    -- the aiohttp app: bert-as-service's ``/encode``, ``/tokenize``, ``/health``,
  ``/info``, ``/status``, ``/metrics``, the API key; ``serve`` with graceful shutdown.
* ``cli``        -- the ``danmaku embed`` Typer app.
"""
